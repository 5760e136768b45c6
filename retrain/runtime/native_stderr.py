"""Lines that native (C++) code writes to stderr, dropped by pattern.

TensorFlow and LiteRT write some notices straight to file descriptor 2, where Python's
logging cannot filter them. filtered() points descriptor 2 at a small filter process for the
length of a block. A process, rather than a file read back afterwards, so that what passes
reaches the terminal at once, and still does if the block kills the process (TensorFlow on a
CPU it was not built for prints why, then aborts).
"""

import contextlib
import os
import subprocess
import sys

_FILTER_PROGRAM = """
import re, sys
noise = re.compile(sys.argv[1].encode())
for line in sys.stdin.buffer:
    if not noise.search(line):
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
"""


@contextlib.contextmanager
def filtered(pattern):
    """Runs the block with file descriptor 2 (C++ code's stderr too) piped through a process
    that drops the lines matching the regular expression `pattern` (a str)."""
    sys.stderr.flush()
    saved_stderr, filter_process = _start_filter(pattern)
    if filter_process is None:  # The lines are noise, not worth failing for.
        yield
        return
    os.dup2(filter_process.stdin.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
        filter_process.stdin.close()
        filter_process.wait()  # What came through is written before anything that follows.


def _start_filter(pattern):
    """(a copy of file descriptor 2, the filter process writing to it), or (None, None) if
    there is no stderr or no process to spare."""
    try:
        saved_stderr = os.dup(2)
    except OSError:
        return None, None
    try:
        # In a session of its own: the Ctrl-C that the terminal sends to retrain must not end
        # it before it has passed on retrain's last lines.
        return saved_stderr, subprocess.Popen(  # pylint: disable=consider-using-with
            [sys.executable, "-I", "-c", _FILTER_PROGRAM, pattern], stdin=subprocess.PIPE,
            stdout=saved_stderr, start_new_session=True)
    except OSError:
        os.close(saved_stderr)
        return None, None
