"""Lines that native (C++) code writes to stderr, dropped by pattern.

TensorFlow and LiteRT write some notices straight to file descriptor 2, where Python's
logging cannot filter them. filtered() points descriptor 2 elsewhere for the length of a
block, in one of two ways:
- live (the default): through a small filter process, so that what passes reaches the
  terminal at once, and still does if the block kills the process (TensorFlow on a CPU it
  was not built for prints why, then aborts). Starting the process costs 40-60 ms.
- not live: into a temporary file, written back without the matching lines when the block
  ends. No process to start, for short blocks on a fast path (label_image --tflite_model's
  first allocation); a crash inside the block loses what it printed.
"""

import contextlib
import os
import re
import subprocess
import sys
import tempfile

_FILTER_PROGRAM = """
import re, sys
noise = re.compile(sys.argv[1].encode())
for line in sys.stdin.buffer:
    if not noise.search(line):
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
"""


@contextlib.contextmanager
def filtered(pattern, live=True):
    """Runs the block with file descriptor 2 (C++ code's stderr too) filtered: the lines
    matching the regular expression `pattern` (a str) are dropped. live: see the module
    docstring."""
    sys.stderr.flush()
    try:
        os.fstat(2)
    except OSError:  # No stderr: nothing to filter.
        yield
        return
    with (_through_process if live else _through_file)(pattern):
        yield


@contextlib.contextmanager
def _redirected(target_fd):
    """Descriptor 2 points at target_fd for the block, then back where it was."""
    saved = os.dup(2)
    os.dup2(target_fd, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def _through_process(pattern):
    try:
        # In a session of its own: the Ctrl-C that the terminal sends to retrain must not end
        # it before it has passed on retrain's last lines. -S: no site-packages to start.
        process = subprocess.Popen(  # pylint: disable=consider-using-with
            [sys.executable, "-I", "-S", "-c", _FILTER_PROGRAM, pattern],
            stdin=subprocess.PIPE, stdout=2, start_new_session=True)
    except OSError:  # The lines are noise, not worth failing for.
        yield
        return
    try:
        with _redirected(process.stdin.fileno()):
            yield
    finally:
        process.stdin.close()
        process.wait()  # What came through is written before anything that follows.


@contextlib.contextmanager
def _through_file(pattern):
    noise = re.compile(pattern.encode())
    with tempfile.TemporaryFile() as caught:
        try:
            with _redirected(caught.fileno()):
                yield
        finally:
            caught.seek(0)
            kept = [line for line in caught.read().splitlines(keepends=True)
                    if not noise.search(line)]
            if kept:
                os.write(2, b"".join(kept))
