"""The head's training state on disk, so that --resume continues an interrupted run.

One file, <checkpoint_path>/head/state.npz (the fine-tuning stage keeps its own subfolder
beside head/), written atomically: the weights, biases and momentum velocities, the next step
to run, the History so far, and a fingerprint of what the run trained on. Because every
batch is drawn from a generator seeded with (seed, step) (retrain.training.sampling), a resumed run
reaches bit-identical weights to a run that was never interrupted.

When: at an evaluation step once `every_seconds` have passed since the last write, on the
first Ctrl-C (training stops at the next evaluation step, within milliseconds, so the state
written is consistent), and at the end. A file of a few hundred KB takes milliseconds to
write, so a write every 10 seconds costs nothing measurable and a killed run (SIGKILL, a
power cut) loses at most those 10 seconds.
"""

import contextlib
import dataclasses
import io
import json
import os
import signal
import time
import zipfile

from absl import logging
import numpy as np

from retrain.errors import UserError
from retrain.runtime import files

HEAD_FOLDER = "head"
STATE_FILE = "state.npz"
_FORMAT_VERSION = 1
_ARRAYS = ("weights", "biases", "weight_velocity", "bias_velocity")


@dataclasses.dataclass
class CheckpointSettings:
    """Where and how often to checkpoint, and whether to resume."""

    directory: str  # the head's folder: <checkpoint_path>/head
    resume: bool = False
    every_seconds: float = 10.0  # 0: at every evaluation step
    # What the caller knows the run trains on beyond the arrays (label names, a digest of the
    # training images, the module): a resumed run must match it. JSON-serialisable values.
    description: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class HeadState:
    """The head's training state after `next_step` steps (steps 0 .. next_step - 1 done)."""

    weights: np.ndarray  # float32 [feature_dim, num_classes]
    biases: np.ndarray  # float32 [num_classes]
    weight_velocity: np.ndarray  # float32 [feature_dim, num_classes]: momentum's running sum
    bias_velocity: np.ndarray  # float32 [num_classes]
    next_step: int
    history: dict  # dataclasses.asdict(train.History)
    fingerprint: dict  # what it was trained on; see train.training_fingerprint


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training, after the state was saved: the message says how to resume."""

    def __init__(self, directory, step):
        super().__init__(f"interrupted at step {step}")
        self.directory = directory
        self.step = step


def head_directory(checkpoint_path):
    """The head's folder inside --checkpoint_path."""
    return os.path.join(checkpoint_path, HEAD_FOLDER)


def state_file(directory):
    return os.path.join(directory, STATE_FILE)


def save_state(directory, state):
    """Writes state to directory/state.npz atomically (a reader sees the old or the new file)."""
    write_archive(state_file(directory), {name: getattr(state, name) for name in _ARRAYS},
                  {"next_step": state.next_step, "history": state.history,
                   "fingerprint": state.fingerprint})


def load_state(directory):
    """The HeadState saved in directory, or None if there is none.

    Raises:
      UserError: the file exists but cannot be read as a checkpoint.
    """
    path = state_file(directory)
    if not os.path.exists(path):
        return None
    arrays, meta = read_archive(path, "checkpoint")
    try:
        return HeadState(next_step=int(meta["next_step"]), history=meta["history"],
                         fingerprint=meta["fingerprint"], **{name: arrays[name] for name in _ARRAYS})
    except KeyError as error:
        raise UserError(f"Cannot read the checkpoint {path!r} (no {error}); drop --resume to "
                        "start over, or pass a new --checkpoint_path.") from error


def write_archive(path, arrays, metadata):
    """Writes named arrays and a JSON-serialisable metadata dict as one .npz file, atomically
    (a reader sees the old file or the new one). Head and fine-tuning checkpoints use it."""
    buffer = io.BytesIO()
    metadata = dict(metadata, format_version=_FORMAT_VERSION)
    np.savez(buffer, metadata=np.array(json.dumps(metadata)), **arrays)
    files.write_file_atomically(path, buffer.getvalue(), flag="--checkpoint_path")


def read_archive(path, what):
    """({name: np.ndarray}, metadata dict) from a file write_archive wrote.

    Raises:
      UserError: naming `what` (e.g. "checkpoint"), when the file cannot be read or comes from
        another format version.
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            metadata = json.loads(str(archive["metadata"]))
            arrays = {name: archive[name] for name in archive.files if name != "metadata"}
        if metadata.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"format version {metadata.get('format_version')}")
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise UserError(f"Cannot read the {what} {path!r} ({error}); drop --resume to start "
                        "over, or pass a new --checkpoint_path.") from error
    return arrays, metadata


def check_fingerprint(saved, current, directory):
    """Raises UserError naming the first value in current that differs from saved.

    Only the keys of current are compared, so a caller can check part of the fingerprint
    (labels and settings, say) before the long work that the rest needs.
    """
    for key, value in current.items():
        before = saved.get(key)
        if before != value:
            raise UserError(
                f"Cannot resume from {directory!r}: it was trained with {key}="
                f"{_short(before)}, this run has {_short(value)}; drop --resume to start over, "
                "or pass a new --checkpoint_path.")


def _short(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def state_to_resume(settings, fingerprint):
    """The HeadState to continue from, or None to start from step 0.

    With resume, a missing checkpoint is a warning and a fresh start (so the same command,
    --resume included, works for the first run and for every retry); a mismatching one is a
    UserError. Without resume, an existing checkpoint is left to be overwritten.
    """
    if not settings.resume:
        if os.path.exists(state_file(settings.directory)):
            logging.info("Starting training over; the checkpoint in %s will be replaced (pass "
                         "--resume to continue from it instead).", settings.directory)
        return None
    state = load_state(settings.directory)
    if state is None:
        logging.warning("--resume: no checkpoint in %s; training from the start.",
                        settings.directory)
        return None
    check_fingerprint(state.fingerprint, fingerprint, settings.directory)
    logging.info("Resuming training at step %d from %s.", state.next_step, settings.directory)
    return state


class Saver:
    """Writes the state at evaluation steps, at most once every `every_seconds`."""

    def __init__(self, settings):
        self.directory = settings.directory
        self._every_seconds = settings.every_seconds
        self._last_save = time.monotonic()
        files.remove_stale_temporaries(state_file(self.directory))

    def due(self):
        return time.monotonic() - self._last_save >= self._every_seconds

    def save(self, state):
        save_state(self.directory, state)
        self._last_save = time.monotonic()


class InterruptFlag:
    """Set by the first Ctrl-C inside deferred_interrupts()."""

    requested = False


@contextlib.contextmanager
def deferred_interrupts(enabled=True):
    """Turns the first Ctrl-C into a flag that the training loop checks at evaluation steps.

    Raising KeyboardInterrupt at an arbitrary bytecode could separate the weights from the
    step counter that goes with them; the loop instead saves a consistent state and raises
    Interrupted. A second Ctrl-C raises KeyboardInterrupt at once. Outside the main thread
    (where Python delivers signals) nothing is deferred.
    """
    flag = InterruptFlag()
    # None: a handler installed outside Python; Python's own raises KeyboardInterrupt.
    previous = signal.getsignal(signal.SIGINT) or signal.default_int_handler
    # Started with Ctrl-C ignored (`cmd &` in a script): it stays ignored.
    if not enabled or previous == signal.SIG_IGN:
        yield flag
        return

    def on_interrupt(signal_number, frame):
        del frame
        flag.requested = True
        signal.signal(signal_number, previous)
        logging.warning("Stopping at the next evaluation step to save the training state "
                        "(Ctrl-C again stops at once).")

    try:
        signal.signal(signal.SIGINT, on_interrupt)
    except ValueError:  # Not the main thread.
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
