"""The suite passes however it is started: here, in the background with SIGINT ignored.

`nohup bash scripts/test.sh &`, cron and many CI runners start the tests with SIGINT ignored,
and a process keeps it ignored: Python installs no KeyboardInterrupt handler, and every
child inherits the same. The Ctrl-C tests then failed ("DID NOT RAISE Interrupted") and the
billion-step one trained until it was killed. Each such test now sets up the handler it needs
(conftest.python_sigint_handler); this runs them as such a run would.
"""

import contextlib
import os
import signal
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every test that sends or raises SIGINT in-process or to a child, and one of each kind that
# sends it to a child: in training, and while TensorFlow loads (conftest's helper, which the
# label_image and compare tests share).
INTERRUPT_TESTS = [
    "tests/training/test_train_checkpoint.py::test_interrupted_then_resumed_run_equals_straight_run",
    "tests/training/test_train_checkpoint.py::test_streamed_run_resumes_to_the_same_weights",
    "tests/training/test_train_checkpoint.py::test_second_ctrl_c_interrupts_at_once",
    "tests/training/test_train_checkpoint.py::"
    "test_ctrl_c_in_a_run_of_a_billion_steps_stops_at_its_first_evaluation",
    "tests/training/test_train_checkpoint.py::test_an_ignored_ctrl_c_stays_ignored",
    "tests/training/test_train_pipeline_resume.py::test_interrupted_run_resumes_to_the_straight_runs_model",
    "tests/training/test_train_pipeline_resume.py::test_ctrl_c_in_training_tells_the_user_to_resume",
    "tests/training/test_train_pipeline_resume.py::test_ctrl_c_while_tensorflow_loads_is_a_one_line_message",
]


@contextlib.contextmanager
def _sigint_ignored():
    """SIGINT ignored in this process for the block: children started in it inherit that, as
    a background job's do. (Set here rather than in preexec_fn, which is unsafe in a process
    with threads, as TensorFlow's.)"""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if before is None else before)


def _run_with_sigint_ignored(command, timeout):
    """subprocess.run's CompletedProcess of command, started with SIGINT ignored; killed and
    failed after timeout seconds."""
    with _sigint_ignored():
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"{command[2:4]} ran over {timeout} s with SIGINT ignored:\n{output[-3000:]}")
    return subprocess.CompletedProcess(command, process.returncode, output)


def test_a_child_started_so_has_sigint_ignored():
    """The setup below is the background job's: Python in it sees SIGINT ignored."""
    completed = _run_with_sigint_ignored(
        [sys.executable, "-c",
         "import signal; print(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)"], 60)
    assert completed.stdout.strip() == "True", completed.stdout


@pytest.mark.timeout(900)
def test_interrupt_tests_pass_in_a_run_started_with_sigint_ignored():
    completed = _run_with_sigint_ignored(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *INTERRUPT_TESTS], 840)
    assert completed.returncode == 0, completed.stdout[-5000:]
    # All of them ran (the first is two tests, one per --class_balance); none was skipped.
    assert f"{len(INTERRUPT_TESTS) + 1} passed in" in completed.stdout, completed.stdout[-2000:]
