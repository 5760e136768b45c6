"""Checkpoints of the head's training state: interrupt, resume, same weights as a straight run."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from retrain.errors import UserError
from retrain.training import checkpoint
from retrain.training import feeding
from retrain.training import sampling
from retrain.training import train


def _toy_problem(examples=400, feature_dim=12, classes=3, seed=0):
    """float32 features [examples, feature_dim] and int32 labels, split 300 / 100."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, examples).astype(np.int32)
    centres = rng.normal(0, 1, (classes, feature_dim))
    features = (centres[labels] + rng.normal(0, 1.0, (examples, feature_dim))).astype(np.float32)
    return features[:300], labels[:300], features[300:], labels[300:]


def _settings(**overrides):
    values = dict(steps=200, batch_size=16, learning_rate=0.05, eval_step_interval=20,
                  validation_batch_size=30, seed=1)
    values.update(overrides)
    return train.TrainingSettings(**values)


def _train(settings, directory=None, resume=False, data=None, every_seconds=10.0):
    checkpoint_settings = None
    if directory is not None:
        checkpoint_settings = checkpoint.CheckpointSettings(
            str(directory), resume=resume, every_seconds=every_seconds)
    return train.train_head(*(data or _toy_problem()), 3, settings,
                            checkpoint_settings=checkpoint_settings)


# Steps past the interrupted one after which a run that did not stop is a failure, not a run
# to wait for (a billion-step run would train for days).
STEPS_TO_STOP = 100


def _interrupt_at_step(monkeypatch, step):
    """Sends this process a real SIGINT when the interval starting at `step` draws its batches.

    The test needs Python's SIGINT handler (the sigint_handler fixture): a process started
    with SIGINT ignored would train on. If it does, training fails STEPS_TO_STOP steps later.
    """
    original = sampling.generator_for_step

    def generator_then_interrupt(seed, first_step, stream=sampling.TRAINING_STREAM):
        if first_step == step and stream == sampling.TRAINING_STREAM:
            signal.raise_signal(signal.SIGINT)
        if first_step > step + STEPS_TO_STOP:
            handler = signal.getsignal(signal.SIGINT)
            raise AssertionError(f"SIGINT at step {step} did not stop training by step "
                                 f"{first_step} (SIGINT handler: {handler})")
        return original(seed, first_step, stream)

    monkeypatch.setattr(sampling, "generator_for_step", generator_then_interrupt)


def _assert_same_training(first, second):
    (head, history), (other_head, other_history) = first, second
    assert np.array_equal(head.weights, other_head.weights)
    assert np.array_equal(head.biases, other_head.biases)
    assert history == other_history


@pytest.mark.parametrize("class_balance", ["classes", "loss_weight"])
def test_interrupted_then_resumed_run_equals_straight_run(tmp_path, monkeypatch, class_balance,
                                                         sigint_handler):
    settings = _settings(class_balance=class_balance)
    straight = _train(settings)
    _interrupt_at_step(monkeypatch, 81)
    with pytest.raises(checkpoint.Interrupted) as interrupted:
        _train(settings, tmp_path)
    monkeypatch.undo()
    # The Ctrl-C lands before the interval 81..100 trains; the loop finishes it, then stops.
    assert interrupted.value.step == 101
    assert checkpoint.load_state(str(tmp_path)).next_step == 101
    assert os.listdir(tmp_path) == [checkpoint.STATE_FILE]  # Nothing half-written beside it.
    _assert_same_training(_train(settings, tmp_path, resume=True), straight)
    assert checkpoint.load_state(str(tmp_path)).next_step == 200


def test_streamed_run_resumes_to_the_same_weights(tmp_path, monkeypatch, sigint_handler):
    training, labels, validation, validation_labels = _toy_problem()
    np.save(tmp_path / "features.npy", training)
    memmap = np.load(tmp_path / "features.npy", mmap_mode="r")
    data = (memmap, labels, validation, validation_labels)
    straight = _train(_settings(), data=data)
    _interrupt_at_step(monkeypatch, 41)
    with pytest.raises(checkpoint.Interrupted):
        _train(_settings(), tmp_path / "checkpoints", data=data)
    monkeypatch.undo()
    _assert_same_training(_train(_settings(), tmp_path / "checkpoints", resume=True, data=data),
                          straight)


def test_finished_run_extended_with_more_steps_equals_a_longer_straight_run(tmp_path):
    # 95 steps end inside the interval 81..100 of a 150-step run: resuming redraws its batches
    # and skips the ones already trained on.
    _train(_settings(steps=95), tmp_path)
    longer, history = _train(_settings(steps=150), tmp_path, resume=True)
    straight, straight_history = _train(_settings(steps=150))
    assert np.array_equal(longer.weights, straight.weights)
    assert np.array_equal(longer.biases, straight.biases)
    assert history.steps[-1] == straight_history.steps[-1] == 149


def test_resuming_a_finished_run_does_not_train(tmp_path, monkeypatch):
    finished = _train(_settings(), tmp_path)

    def fail(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(feeding.VariableFeed, "train_steps", fail)
    _assert_same_training(_train(_settings(), tmp_path, resume=True), finished)


def test_resume_without_checkpoint_warns_and_starts_over(tmp_path, caplog):
    result = _train(_settings(), tmp_path / "none_yet", resume=True)
    assert "no checkpoint" in caplog.text
    _assert_same_training(result, _train(_settings()))


@pytest.mark.parametrize("change, message", [
    (dict(learning_rate=0.1), "learning_rate=0.05, this run has 0.1"),
    (dict(class_balance="images"), "class_balance='classes', this run has 'images'"),
    (dict(seed=2), "seed=1, this run has 2"),
])
def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path, change, message):
    _train(_settings(steps=40), tmp_path)
    with pytest.raises(UserError, match=f"{message}; drop --resume to start over, or pass a new "
                                        "--checkpoint_path"):
        _train(_settings(steps=40, **change), tmp_path, resume=True)


def test_resume_refuses_a_checkpoint_of_other_data(tmp_path):
    _train(_settings(steps=40), tmp_path)
    training, labels, validation, validation_labels = _toy_problem()
    with pytest.raises(UserError, match="training_examples=300, this run has 299"):
        _train(_settings(steps=40), tmp_path, resume=True,
               data=(training[1:], labels[1:], validation, validation_labels))
    with pytest.raises(UserError, match="training_labels_sha1="):
        _train(_settings(steps=40), tmp_path, resume=True,
               data=(training, labels[::-1].copy(), validation, validation_labels))
    with pytest.raises(UserError, match="more than --how_many_training_steps=20; raise it"):
        _train(_settings(steps=20), tmp_path, resume=True)


def test_corrupt_checkpoint_is_a_user_error(tmp_path):
    (tmp_path / checkpoint.STATE_FILE).write_bytes(b"not a zip file")
    with pytest.raises(UserError, match="Cannot read the checkpoint .*drop --resume"):
        _train(_settings(steps=40), tmp_path, resume=True)


def test_second_ctrl_c_interrupts_at_once(sigint_handler):
    with checkpoint.deferred_interrupts() as interrupt:
        signal.raise_signal(signal.SIGINT)
        assert interrupt.requested
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


_KILLED_RUN = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_train_checkpoint import _settings, _train
    _train(_settings(steps={steps}, eval_step_interval=5), {directory!r}, every_seconds=0)
""")


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    """SIGKILL (no chance to save) at whatever step it lands: the last periodic checkpoint
    resumes to the weights of a straight run."""
    steps, directory = 1500, str(tmp_path / "head")
    code = _KILLED_RUN.format(tests=os.path.dirname(__file__), steps=steps, directory=directory)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(checkpoint.state_file(directory)):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.2)
    finally:
        process.kill()
        process.wait()
    killed_at = checkpoint.load_state(directory).next_step
    assert 0 < killed_at < steps
    leftovers = set(os.listdir(directory)) - {checkpoint.STATE_FILE}
    assert all(name.startswith(".tmp-") for name in leftovers)  # Only a write cut short.
    settings = _settings(steps=steps, eval_step_interval=5)
    _assert_same_training(_train(settings, directory, resume=True), _train(settings))


def _eager_intervals(steps, interval):
    """retrain.py's evaluation steps, built in full, as training_intervals once did."""
    evaluations = sorted(set(range(0, steps, interval)) | {steps - 1}) if steps > 0 else []
    return list(zip([0] + [step + 1 for step in evaluations[:-1]], evaluations))


@pytest.mark.parametrize("steps", [0, 1, 2, 9, 10, 11, 20, 21, 37])
@pytest.mark.parametrize("interval", [1, 3, 10])
def test_training_intervals_from_any_start_step(steps, interval):
    eager = _eager_intervals(steps, interval)
    for start_step in range(steps + 2):
        expected = [pair for pair in eager if pair[1] >= start_step]
        assert list(train.training_intervals(steps, interval, start_step)) == expected
        assert list(train.evaluation_steps(steps, interval, start_step)) == [
            eval_step for _, eval_step in expected]
    evaluations = {eval_step for _, eval_step in eager}
    assert [step for step in range(-1, steps + 2)
            if train.is_evaluation_step(step, steps, interval)] == sorted(evaluations)


@pytest.mark.timeout(120)  # Building 10^8 intervals first would take minutes, or all memory.
def test_ctrl_c_in_a_run_of_a_billion_steps_stops_at_its_first_evaluation(tmp_path,
                                                                            monkeypatch,
                                                                            sigint_handler):
    """The docker e2e's `--how_many_training_steps=100000000` once spent seconds building
    every evaluation step before the first; a Ctrl-C then waited for all of it."""
    _interrupt_at_step(monkeypatch, 0)
    with pytest.raises(checkpoint.Interrupted) as interrupted:
        _train(_settings(steps=10**9, eval_step_interval=10), tmp_path / "head")
    assert interrupted.value.step == 1


def test_an_ignored_ctrl_c_stays_ignored():
    """A job started in the background of a script inherits SIGINT ignored; training must not
    start listening to it."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with checkpoint.deferred_interrupts() as interrupt:
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            signal.raise_signal(signal.SIGINT)
            assert not interrupt.requested
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
