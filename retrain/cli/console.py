"""What both command-line tools share: quiet, readable logging and one-line errors."""

import atexit
import contextlib
import gc
import glob
import logging as std_logging
import os
import sys

from absl import logging

from retrain.runtime import native_stderr


def configure_log_format():
    """INFO lines as "INFO: message" (retrain.py's look). Needs no TensorFlow: the checks
    that run before its import log in the same format."""
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().setFormatter(std_logging.Formatter("%(levelname)s: %(message)s"))


def configure_logging():
    """INFO lines as "INFO: message" (retrain.py's look), without TensorFlow's own chatter.

    Imports TensorFlow, so call it before anything else does: TensorFlow's C++ logging level
    is an environment variable read at import, and its lines about CUDA on a machine without
    a GPU are written during the import (and at the first look for GPUs, done here too).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.set_verbosity(logging.INFO)
    handler = logging.get_absl_handler()
    handler.setFormatter(std_logging.Formatter("%(levelname)s: %(message)s"))
    for log_filter in (_drop_tensorflow_chatter, _erase_live_line):
        if log_filter not in handler.filters:
            handler.addFilter(log_filter)
    with _without_cuda_lines_unless_gpu():
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        # TensorFlow logs cuInit's failure when it first looks for GPUs: let it look here.
        tf.config.list_physical_devices("GPU")
    # TensorFlow's INFO lines (SavedModel internals) would bury the training log. Its logger
    # is set up when TensorFlow is imported, so it is quietened after the import.
    tf.get_logger().setLevel(std_logging.WARNING)


# INFO lines that TensorFlow's Python code logs through absl (not through tf.get_logger(), so
# the level set above does not reach them), each about internals a user cannot act on:
_TENSORFLOW_CHATTER = (
    # Keras export names a SavedModel signature's inputs after its variables, numbers that
    # TensorFlow renames; the line lists every one (1,867 characters for efficientnet_lite0)
    # the first time a built-in backbone is built, and the renamed SavedModel works the same.
    "Function `%s` contains input name(s) %s with unsupported characters",
    # Written at every SavedModel and checkpoint save.
    "Sharding callback duration: %s microseconds",
    "Writing fingerprint to %s",
)


def _drop_tensorflow_chatter(record):
    """False (drop) for an INFO record whose message is one of _TENSORFLOW_CHATTER."""
    return not (record.levelno < std_logging.WARNING and isinstance(record.msg, str)
                and record.msg.startswith(_TENSORFLOW_CHATTER))


def _erase_live_line(record):  # pylint: disable=unused-argument
    """Keeps every record; erases progress's live line first, so the record starts at the
    margin instead of after the live line's text."""
    from retrain.runtime import progress  # pylint: disable=import-outside-toplevel
    progress.erase_live_line()
    return True


# What TensorFlow's C++ side writes to stderr on a machine without a GPU: a notice that its
# logging is not set up yet, that no CUDA driver was found (twice: two of its libraries carry
# a copy of the CUDA stub), and cuInit's failure. Both libraries log these through absl's C++
# logging before it is initialised, which TF_CPP_MIN_LOG_LEVEL does not reach (checked with
# TensorFlow 2.21: all but cuInit's still print at level 3), and at load time, before any
# Python code could turn them off.
_CUDA_NOISE = (r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
               r"|Could not find cuda drivers on your machine|failed call to cuInit")

def has_gpu_device():
    """Whether the machine shows an NVIDIA GPU (/dev/nvidia*, or /dev/dxg under WSL)."""
    return bool(glob.glob("/dev/nvidia*") or os.path.exists("/dev/dxg"))


@contextlib.contextmanager
def _without_cuda_lines_unless_gpu():
    """Runs the block with stderr's CUDA lines (_CUDA_NOISE) dropped, on a machine without a
    GPU, where they say nothing the user needs. With a GPU they may tell why it is not used,
    so they stay; so they do with TF_CPP_MIN_LOG_LEVEL=0 (TensorFlow's C++ log asked for)."""
    if has_gpu_device() or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        yield
        return
    with native_stderr.filtered(_CUDA_NOISE):
        yield


def skip_garbage_collection_at_exit():
    """Saves about a second at the end of every command.

    When the interpreter exits, its last garbage collection walks every object TensorFlow
    created, which took 1.1 s after a bare `import tensorflow` (2 cores); the memory goes back
    to the system either way. Frozen objects are not walked. atexit handlers (absl's log
    flushing among them) still run, before this one: handlers run last-registered first.
    """
    atexit.register(gc.freeze)


def print_error(program, message):
    """Prints "<program>: error: <message>" on stderr, as one line."""
    one_line = " ".join(str(message).split())
    print(f"{program}: error: {one_line}", file=sys.stderr)
