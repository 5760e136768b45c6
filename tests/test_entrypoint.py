"""docker/entrypoint.sh run on the host, with fake `retrain` and `label_image` on PATH.

The fakes print what they were given (argv, HOME, their pid) as one JSON line and exit with
$FAKE_STATUS, so these tests need neither a Docker engine nor TensorFlow.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest

REPO_DIR = pathlib.Path(__file__).resolve().parent.parent
ENTRYPOINT = REPO_DIR / "docker" / "entrypoint.sh"

RETRAIN_DEFAULTS = ["--image_dir=/images", "--output_dir=/out", "--bottleneck_dir=/cache/bottlenecks"]
LABEL_IMAGE_DEFAULTS = ["--saved_model_dir=/out/saved_model"]

FAKE_TOOL = """#!{python}
import json, os, sys, time
print(json.dumps({{"tool": os.path.basename(sys.argv[0]), "argv": sys.argv[1:],
                  "home": os.environ.get("HOME"), "pid": os.getpid()}}), flush=True)
if os.environ.get("FAKE_SLEEP"):
    time.sleep(float(os.environ["FAKE_SLEEP"]))
sys.exit(int(os.environ.get("FAKE_STATUS", "0")))
"""


@pytest.fixture
def fake_env(tmp_path):
    """Environment whose PATH starts with fake retrain and label_image, and a writable HOME."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("retrain", "label_image"):
        tool = bin_dir / name
        tool.write_text(FAKE_TOOL.format(python=sys.executable))
        tool.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", HOME=str(home),
               TMPDIR=str(tmp_path))
    env.pop("FAKE_STATUS", None)
    return env


def run_entrypoint(args, env, **kwargs):
    return subprocess.run(["sh", str(ENTRYPOINT), *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False, **kwargs)


def fake_call(completed):
    """The JSON line a fake tool printed."""
    assert completed.stdout, completed.stderr
    return json.loads(completed.stdout.splitlines()[0])


def test_retrain_gets_the_container_folders_as_defaults(fake_env):
    call = fake_call(run_entrypoint(["retrain"], fake_env))
    assert call["tool"] == "retrain"
    assert call["argv"] == RETRAIN_DEFAULTS


def test_user_flags_come_after_the_defaults_so_they_win(fake_env):
    user_args = ["--how_many_training_steps=5", "--output_dir", "/out/run 2", "--image_dir=/x"]
    call = fake_call(run_entrypoint(["retrain", *user_args], fake_env))
    assert call["argv"] == RETRAIN_DEFAULTS + user_args


@pytest.mark.parametrize("subcommand", ["audit", "compare"])
def test_a_subcommand_stays_first_and_gets_the_defaults(fake_env, subcommand):
    # The subcommand must come first: `retrain --image_dir=/images audit` would be a retrain run.
    call = fake_call(run_entrypoint(["retrain", subcommand, "--kfolds=3"], fake_env))
    assert call["argv"] == [subcommand, *RETRAIN_DEFAULTS, "--kfolds=3"]


def test_bottlenecks_gets_no_output_dir(fake_env):
    call = fake_call(run_entrypoint(["retrain", "bottlenecks"], fake_env))
    assert call["argv"] == ["bottlenecks", "--image_dir=/images",
                            "--bottleneck_dir=/cache/bottlenecks"]


def test_leading_flag_means_retrain(fake_env):
    call = fake_call(run_entrypoint(["--how_many_training_steps=5"], fake_env))
    assert call["tool"] == "retrain"
    assert call["argv"] == RETRAIN_DEFAULTS + ["--how_many_training_steps=5"]


def test_label_image_reads_the_model_from_out(fake_env):
    call = fake_call(run_entrypoint(["label_image", "--image", "/new/x.jpg"], fake_env))
    assert call["tool"] == "label_image"
    assert call["argv"] == LABEL_IMAGE_DEFAULTS + ["--image", "/new/x.jpg"]


def test_arguments_pass_verbatim(fake_env, tmp_path):
    marker = tmp_path / "evaluated"
    tricky = [f"--image=/a b/$(touch {marker})", "`id`", "*", "'quoted' \"twice\"", ""]
    call = fake_call(run_entrypoint(["label_image", *tricky], fake_env))
    assert call["argv"] == LABEL_IMAGE_DEFAULTS + tricky
    assert not marker.exists()


def test_other_commands_run_as_given(fake_env):
    completed = run_entrypoint(["sh", "-c", 'echo "ran $0 $1"; exit 7', "x", "y z"], fake_env)
    assert completed.stdout == "ran x y z\n"
    assert completed.returncode == 7


@pytest.mark.parametrize("tool", ["retrain", "label_image"])
@pytest.mark.parametrize("status", [0, 1, 2, 130])
def test_exit_status_is_the_tools(fake_env, tool, status):
    completed = run_entrypoint([tool], dict(fake_env, FAKE_STATUS=str(status)))
    assert completed.returncode == status


def test_unknown_command_fails_like_a_shell(fake_env):
    completed = run_entrypoint(["no-such-command-here"], fake_env)
    assert completed.returncode == 127


def test_no_command_is_a_usage_error(fake_env):
    completed = run_entrypoint([], fake_env)
    assert completed.returncode == 2
    assert "retrain --help" in completed.stderr


def test_writable_home_is_kept(fake_env):
    call = fake_call(run_entrypoint(["retrain"], fake_env))
    assert call["home"] == fake_env["HOME"]


def test_unwritable_home_is_replaced_by_a_private_temporary_one(fake_env, tmp_path):
    # Like `docker run --user 4242`, which leaves HOME=/ (root's). A missing folder stands in
    # for an unwritable one, because the tests may run as root, who can write anywhere.
    env = dict(fake_env, HOME="/no/such/home")
    call = fake_call(run_entrypoint(["retrain"], env))
    new_home = pathlib.Path(call["home"])
    assert new_home.parent == tmp_path  # under $TMPDIR
    assert new_home.is_dir() and os.access(new_home, os.W_OK)


def test_tool_replaces_the_shell_so_it_receives_signals(fake_env):
    # exec: the tool keeps the entrypoint's pid, so `docker stop`'s SIGTERM (forwarded by
    # dumb-init) reaches the tool itself, not a shell waiting for it.
    process = subprocess.Popen(["sh", str(ENTRYPOINT), "retrain"], stdout=subprocess.PIPE,
                               text=True, env=dict(fake_env, FAKE_SLEEP="60"))
    try:
        call = json.loads(process.stdout.readline())
        assert call["pid"] == process.pid
        process.send_signal(signal.SIGTERM)
        # Killed by the signal itself, well before the tool's 60 s sleep would end: a shell
        # in between would wait for it. (No wall-clock bound beyond that: a loaded machine
        # may take seconds to schedule the exit.)
        assert process.wait(timeout=30) == -signal.SIGTERM
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
