"""A run's console output stays short: no CUDA lines without a GPU, no TensorFlow chatter,
no Step line per evaluation (they go to the training log, and to the console with --verbose),
and progress as one line per tenth of the work (plus a live line on a terminal only)."""

import io
import logging
import os
import re
import subprocess
import sys

import pytest

from retrain import pipeline
from retrain.cli import console
from retrain.runtime import native_stderr
from retrain.runtime import progress
from tests.conftest import fast_config

STEPS, INTERVAL = 100, 5
# Evaluations at 0, 5, ..., 95 and the last step; three lines each.
EVALUATED_STEPS = [*range(0, STEPS - 1, INTERVAL), STEPS - 1]
STEP_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: Step (\d+): (Train accuracy = "
                       r"[\d.]+%|Cross entropy = [\d.]+|Validation accuracy = [\d.]+% \(N=\d+\))$")
TENTH_LINE = re.compile(r"^INFO: Training: \d+/100 steps \((\d+)%\): train accuracy")


def _retrain(tiny_module, colour_images, output_dir, *extra):
    """Runs the retrain command in a subprocess (stderr a pipe, not a terminal)."""
    completed = subprocess.run(
        [sys.executable, "-m", "retrain", f"--image_dir={colour_images}",
         f"--tfhub_module={tiny_module}", f"--output_dir={output_dir}",
         f"--how_many_training_steps={STEPS}", f"--eval_step_interval={INTERVAL}",
         "--learning_rate=0.1", "--bottleneck_batch_size=8", *extra],
        capture_output=True, text=True, timeout=240, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stderr.splitlines()


def _step_numbers(lines):
    """The step of each retrain.py Step line in lines (with or without "INFO: ")."""
    matches = [STEP_LINE.match(line.removeprefix("INFO: ")) for line in lines]
    return [int(match.group(1)) for match in matches if match]


@pytest.fixture(scope="module")
def quiet_run(tmp_path_factory, tiny_module, colour_images):
    output_dir = tmp_path_factory.mktemp("quiet") / "out"
    return _retrain(tiny_module, colour_images, output_dir), output_dir


@pytest.mark.timeout(300)
def test_console_has_a_line_per_tenth_and_no_step_lines(quiet_run):
    lines, _ = quiet_run
    assert not [line for line in lines if ": Step " in line]
    tenths = [int(match.group(1)) for match in map(TENTH_LINE.match, lines) if match]
    # One per tenth (the first evaluation in it: 11 steps done is 11%), and the end; a line a
    # minute may come on top on a very slow machine.
    assert {percent // 10 for percent in tenths} >= set(range(1, 11)) and tenths[-1] == 100
    assert "\r" not in "\n".join(lines)  # No live line where stderr is not a terminal.
    assert len(lines) < 45, "\n".join(lines)


@pytest.mark.timeout(300)
def test_training_log_holds_every_step_line(quiet_run):
    _, output_dir = quiet_run
    log_lines = (output_dir / "training_log.txt").read_text(encoding="utf-8").splitlines()
    assert _step_numbers(log_lines) == [step for step in EVALUATED_STEPS for _ in range(3)]
    assert len(log_lines) == 3 * len(EVALUATED_STEPS)


@pytest.mark.timeout(300)
@pytest.mark.skipif(console.has_gpu_device(), reason="with a GPU, CUDA lines may be real news")
def test_no_cuda_lines_without_a_gpu(quiet_run):
    lines, _ = quiet_run
    assert not [line for line in lines if "cuInit" in line or "cuda drivers" in line.lower()]
    assert not [line for line in lines if "absl::InitializeLog" in line]


@pytest.mark.timeout(300)
def test_verbose_prints_every_step_line_too(tmp_path, tiny_module, colour_images):
    lines = _retrain(tiny_module, colour_images, tmp_path / "out", "--verbose")
    assert _step_numbers(lines) == [step for step in EVALUATED_STEPS for _ in range(3)]
    assert (tmp_path / "out" / "training_log.txt").exists()


@pytest.mark.timeout(300)
def test_fine_tuning_appends_its_step_lines_to_the_log(tmp_path, tiny_module, colour_images):
    config = fast_config(colour_images, tiny_module, tmp_path / "out", how_many_training_steps=20,
                         eval_step_interval=10, fine_tune=True, fine_tune_steps=4,
                         fine_tune_eval_interval=2, fine_tune_batch_size=4)
    pipeline.run(config)
    text = (tmp_path / "out" / "training_log.txt").read_text(encoding="utf-8")
    assert _step_numbers(text.splitlines()) == [0, 0, 0, 10, 10, 10, 19, 19, 19]
    fine_tune_steps = re.findall(r"^\S+ \S+: Fine-tune step (\d+): Train accuracy = ", text,
                                 re.MULTILINE)
    assert fine_tune_steps == ["0", "2", "3"]
    assert text.index(": Step 19: ") < text.index(": Fine-tune step 0: ")


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _info_messages(caplog):
    return [record.getMessage() for record in caplog.records if record.levelno == logging.INFO]


def test_progress_logs_each_tenth_at_most_every_interval(caplog):
    caplog.set_level("INFO", logger="absl")
    clock = _Clock()
    logger = progress.ProgressLogger("Bottlenecks", 1000, interval=5.0, clock=clock,
                                     stream=io.StringIO())
    for _ in range(100):  # 10 images a second: a tenth every 10 s.
        clock.now += 1.0
        logger.update(10)
    messages = _info_messages(caplog)
    assert [message.split(" ")[1] for message in messages] == [
        f"{done}/1000" for done in range(100, 1001, 100)]
    assert messages[-1].endswith(", 1m40s in all")


def test_progress_of_a_fast_stage_waits_the_interval_and_a_slow_one_logs_each_minute(caplog):
    caplog.set_level("INFO", logger="absl")
    clock = _Clock()
    fast = progress.ProgressLogger("Fast", 100, interval=5.0, clock=clock, stream=io.StringIO())
    for _ in range(100):  # A tenth a second: a line every 5 s at most, and the last.
        clock.now += 0.1
        fast.update(1)
    assert len(_info_messages(caplog)) == 2
    caplog.clear()
    slow = progress.ProgressLogger("Slow", 100, interval=5.0, max_interval=60.0, clock=clock,
                                   stream=io.StringIO())
    for _ in range(5):  # 30 s per image: a tenth takes 5 minutes.
        clock.now += 30.0
        slow.update(1)
    assert len(_info_messages(caplog)) == 2  # At 60 s and 120 s.


def test_live_line_only_on_a_terminal_and_erased_before_a_log_line(caplog):
    caplog.set_level("INFO", logger="absl")
    clock = _Clock()
    terminal, pipe = _Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        logger = progress.ProgressLogger("Bottlenecks", 100, clock=clock, stream=stream)
        for _ in range(20):
            clock.now += 1.0
            logger.update(1)
    assert pipe.getvalue() == ""
    drawn = terminal.getvalue().split("\r\033[K")
    assert "Bottlenecks: 3/100 (3.0%), 1.0 images/s, about 1m37s left" in drawn
    assert drawn[-1] == ""  # Erased before the log line at 20 s (a tenth).
    assert len(_info_messages(caplog)) == 4  # Each stream's logger: at 10 s and 20 s.


def test_training_progress_writes_step_lines_as_they_come(tmp_path, caplog):
    caplog.set_level("INFO", logger="absl")
    clock = _Clock()
    log_file = tmp_path / "logs" / "training_log.txt"
    with progress.TrainingProgress("Training", 40, log_file=str(log_file), clock=clock,
                                   stream=io.StringIO()) as run:
        for done in range(1, 41):
            clock.now += 0.5
            run.log_steps([f"Step {done - 1}: a", f"Step {done - 1}: b"])
            # Written line by line: a crash keeps every line so far.
            assert len(log_file.read_text().splitlines()) == 2 * done
            run.update(done, 0.9, 0.25, 0.8, 12)
    messages = _info_messages(caplog)
    assert len(messages) == 10 and not [message for message in messages if "Step" in message]
    assert messages[0] == ("Training: 4/40 steps (10%): train accuracy 90.0%, validation accuracy "
                           "80.0% (N=12), cross-entropy 0.250, about 18s left")
    assert messages[-1].endswith(", 20s in all")
    with progress.TrainingProgress("Fine-tuning", 2, log_file=str(log_file), verbose=True,
                                   append=True, clock=clock, stream=io.StringIO()) as run:
        run.log_steps(["Fine-tune step 0: a"])
    assert log_file.read_text().splitlines()[-1] == "Fine-tune step 0: a"
    assert len(log_file.read_text().splitlines()) == 81
    assert _info_messages(caplog)[-1] == "Fine-tune step 0: a"  # verbose: on the console too


def test_tensorflow_chatter_is_dropped_and_other_records_kept():
    def record(level, msg, *args):
        return logging.LogRecord("absl", level, __file__, 1, msg, args, None)

    signature = record(logging.INFO, "Function `%s` contains input name(s) %s with unsupported "
                       "characters which will be renamed to %s in the SavedModel.", "serve",
                       "1, 2", "x_1, x_2")
    assert not console._drop_tensorflow_chatter(signature)  # pylint: disable=protected-access
    for kept in (record(logging.INFO, "Bottlenecks: %d/%d", 1, 2),
                 record(logging.WARNING, "Writing fingerprint to %s", "/x")):
        assert console._drop_tensorflow_chatter(kept)  # pylint: disable=protected-access


def test_stderr_filter_drops_cuda_lines_and_passes_the_rest(capfd):
    noise = ("W0000 00:00:1.2 1 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n"
             "I0000 00:00:1.2 1 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
             "GPU will not be used.\n")
    # pylint: disable=protected-access
    with native_stderr.filtered(console._CUDA_NOISE):
        os.write(2, noise.encode() + b"E0000 real trouble\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "E0000 real trouble\nafter\n"


def test_stderr_filter_held_in_a_file_drops_the_same_lines(capfd):
    with native_stderr.filtered(console._CUDA_NOISE, live=False):  # pylint: disable=protected-access
        os.write(2, b"I0000 cudart_stub.cc:31] Could not find cuda drivers on your machine\n"
                    b"E0000 real trouble\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "E0000 real trouble\nafter\n"
