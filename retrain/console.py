"""What both command-line tools share: quiet, readable logging and one-line errors."""

import atexit
import gc
import logging as std_logging
import os
import sys

from absl import flags
from absl import logging


def configure_logging():
    """INFO lines as "INFO: message" (retrain.py's look), without TensorFlow's own chatter.

    Call before TensorFlow is imported: its C++ start-up messages (about CUDA on machines
    without a GPU) are controlled by an environment variable read at import.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().setFormatter(std_logging.Formatter("%(levelname)s: %(message)s"))
    # TensorFlow's INFO lines (SavedModel internals) would bury the training log. Its logger
    # is set up when TensorFlow is imported, so it is quietened after the import.
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    tf.get_logger().setLevel(std_logging.WARNING)


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


def show_own_flags_in_help(flag_values=flags.FLAGS):
    """Makes --help list retrain's flags, not only absl's.

    absl's --help lists the flags of the main module, which under a console script or
    `python -m retrain` is a launcher that defines none; retrain's modules define them.
    """
    for module_name, module_flags in flag_values.flags_by_module_dict().items():
        if module_name.startswith("retrain"):
            for flag in module_flags:
                flag_values.register_key_flag_for_module(sys.argv[0], flag)
