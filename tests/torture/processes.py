"""Running the retrain CLI as a separate process, and killing it at a chosen moment."""

import glob
import os
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli_environment():
    # The package under test, not whichever copy is installed in the venv.
    return dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")


def retrain_argv(image_dir, module, output_dir, **flags):
    argv = [sys.executable, "-m", "retrain", f"--image_dir={image_dir}",
            f"--tfhub_module={module}", f"--output_dir={output_dir}"]
    return argv + [f"--{name}={value}" for name, value in flags.items()]


def start(argv, log_path, **kwargs):
    log = open(log_path, "wb")  # pylint: disable=consider-using-with
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=cli_environment(),
                            **kwargs)


def kill_when(process, condition, timeout=120, poll_seconds=0.005):
    """SIGKILLs process as soon as condition() holds.

    Returns:
      True if it was killed while still running; False if it exited first.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if condition():
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            return True
        time.sleep(poll_seconds)
    process.kill()
    process.wait()
    raise TimeoutError("the kill condition never held")


def exists(pattern):
    """A condition: some path matches the glob pattern."""
    return lambda: bool(glob.glob(pattern))
