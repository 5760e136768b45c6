"""Progress of long stages and training runs, without flooding the console.

Everywhere: a log line at each tenth of the work and at the end. On a terminal, in between:
one live line on stderr that rewrites itself ("\\r"); where stderr is a file or a pipe, no live
line, so logs hold whole lines only. Training runs also write every evaluation's Step lines
to a log file (TrainingProgress).
"""

import contextlib
import os
import shutil
import sys
import time

from absl import logging

from retrain.runtime import files

# The live line is redrawn at most this often (seconds): often enough to look alive, rarely
# enough that drawing costs nothing next to a training step.
LIVE_INTERVAL = 0.2


def format_duration(seconds):
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class LiveLine:
    """One status line on `stream` (default: sys.stderr at each call) that rewrites itself.

    Draws only when the stream is a terminal. Log lines erase it first (erase_live_line,
    which console.configure_logging hooks into the log handler), so they start at the margin.
    """

    _shown = None  # The LiveLine now on screen, if any.

    def __init__(self, stream=None, interval=LIVE_INTERVAL, clock=time.monotonic):
        self._fixed_stream, self._interval, self._clock = stream, interval, clock
        self._last_draw = None

    @property
    def _stream(self):
        return sys.stderr if self._fixed_stream is None else self._fixed_stream

    @property
    def enabled(self):
        isatty = getattr(self._stream, "isatty", None)
        try:
            return bool(isatty and isatty())
        except ValueError:  # A closed stream.
            return False

    def show(self, text):
        """Draws text in place of the previous line, at most every `interval` seconds."""
        now = self._clock()
        if self._last_draw is not None and now - self._last_draw < self._interval:
            return
        if not self.enabled:
            return
        self._last_draw = now
        # One column short of the width: a line that wraps can no longer be rewritten by "\r".
        width = max(shutil.get_terminal_size().columns - 1, 20)
        self._stream.write("\r\033[K" + text[:width])
        self._stream.flush()
        LiveLine._shown = self

    def erase(self):
        if LiveLine._shown is self:
            LiveLine._shown = None
            self._stream.write("\r\033[K")
            self._stream.flush()


def erase_live_line():
    """Erases the live line, if one is drawn, so that the next line starts at the margin."""
    if LiveLine._shown is not None:
        LiveLine._shown.erase()


class _TenthSchedule:
    """When to log: at each new tenth of the work, at most every min_interval seconds and at
    least every max_interval (None: no such bound), and once at the end."""

    def __init__(self, total, done, min_interval, max_interval, now):
        self.total, self.min_interval, self.max_interval = max(total, 1), min_interval, max_interval
        self.tenth = self._tenth_of(done)
        self.last_log = now
        self.finished = done >= self.total

    def _tenth_of(self, done):
        return 10 * done // self.total

    def due(self, done, now):
        if self.finished:
            return False
        since = now - self.last_log
        tenth = self._tenth_of(done)
        due = (done >= self.total or (tenth > self.tenth and since >= self.min_interval)
               or (self.max_interval is not None and since >= self.max_interval))
        if due:
            self.tenth, self.last_log, self.finished = tenth, now, done >= self.total
        return due


class ProgressLogger:
    """Reports "<what>: done/total (pct), N <unit>/s, about T left" of a long stage.

    Logged at each tenth of the work but at most every `interval` seconds and at least every
    `max_interval` (so 10-20 lines for a stage of minutes, one a minute for an hour), and at
    the end; on a terminal the line also shows live in between.
    """

    def __init__(self, what, total, unit="images", interval=5.0, max_interval=60.0,
                 clock=time.monotonic, stream=None):
        self._what, self._total, self._unit = what, total, unit
        self._clock = clock
        self._start = clock()
        self._schedule = _TenthSchedule(total, 0, interval, max_interval, self._start)
        self._live = LiveLine(stream, clock=clock)
        self.done = 0

    def update(self, count):
        self.done += count
        now = self._clock()
        if self._schedule.due(self.done, now):
            _log(self.line(now))
        else:
            self._live.show(self.line(now))

    def line(self, now=None):
        elapsed = max((now if now is not None else self._clock()) - self._start, 1e-9)
        rate = self.done / elapsed
        percent = 100.0 * self.done / max(self._total, 1)
        text = f"{self._what}: {self.done}/{self._total} ({percent:.1f}%), {rate:.1f} {self._unit}/s"
        return text + _time_left(self._total - self.done, rate, elapsed)


class TrainingProgress:
    """What a training loop reports, and where.

    Every evaluation's exact lines (retrain.py's "Step N: ..." lines) go to `log_file`,
    written line by line so that a crash keeps them, and to the console too when `verbose`.
    The console otherwise gets a summary line at each tenth of the run (and at least every
    `max_interval` seconds, for long runs) and at its end, and on a terminal a terse one live
    at every update.

    Use as a context manager (closes the log file).
    """

    def __init__(self, what, total_steps, start_step=0, log_file=None, verbose=False,
                 append=False, max_interval=60.0, clock=time.monotonic, stream=None):
        self._what, self._total, self._verbose = what, total_steps, verbose
        self._clock = clock
        self._start, self._start_step = clock(), start_step
        self._schedule = _TenthSchedule(total_steps, start_step, 0.0, max_interval, self._start)
        self._live = LiveLine(stream, clock=clock)
        self._file, self._log_file = None, log_file
        if log_file:
            with self._log_write_errors():
                os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
                # Line-buffered: each line is on disk once written, even if the run is killed.
                self._file = open(log_file, "a" if append else "w",  # pylint: disable=consider-using-with
                                  buffering=1, encoding="utf-8")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def log_steps(self, lines):
        """Writes an evaluation's lines (str, no newline) to the log file, and the console if
        verbose."""
        for line in lines:
            if self._file:
                with self._log_write_errors():
                    self._file.write(line + "\n")
            if self._verbose:
                _log(line)

    def update(self, steps_done, train_accuracy, cross_entropy, validation_accuracy=None,
               validation_count=0):
        """Reports that steps_done of the run's steps are done, with the latest numbers
        (accuracies in [0, 1]; validation_accuracy None: not known)."""
        now = self._clock()
        elapsed = max(now - self._start, 1e-9)
        rate = (steps_done - self._start_step) / elapsed
        time_left = _time_left(self._total - steps_done, rate, elapsed)
        if self._schedule.due(steps_done, now):
            validation = ("" if validation_accuracy is None else
                          f", validation accuracy {validation_accuracy * 100:.1f}% "
                          f"(N={validation_count})")
            _log(f"{self._what}: {steps_done}/{self._total} steps "
                 f"({100.0 * steps_done / max(self._total, 1):.0f}%): train accuracy "
                 f"{train_accuracy * 100:.1f}%{validation}, cross-entropy {cross_entropy:.3f}"
                 + time_left)
        elif self._live.enabled:
            # Terse, to fit 80 columns.
            validation = ("" if validation_accuracy is None
                          else f", validation {validation_accuracy * 100:.1f}%")
            self._live.show(f"{self._what} {steps_done}/{self._total}: train "
                            f"{train_accuracy * 100:.1f}%{validation}, loss {cross_entropy:.3f}"
                            + time_left.replace(", about ", ", "))

    def close(self):
        self._live.erase()
        if self._file:
            log, self._file = self._file, None
            with self._log_write_errors():
                log.close()

    @contextlib.contextmanager
    def _log_write_errors(self):
        """Turns a failed write of the log file (a full disk, a read-only folder) into a UserError
        that names the folder and the fix; the log lives in --output_dir."""
        try:
            yield
        except OSError as error:
            if self._file:
                log, self._file = self._file, None
                try:
                    log.close()
                except OSError:
                    pass  # The same failure again, on flushing what was buffered.
            raise files.write_error(os.path.dirname(os.path.abspath(self._log_file)),
                                    "--output_dir", error, what="the training log") from error


def _log(text):
    """Logs text as an INFO line, starting at the margin."""
    erase_live_line()
    logging.info("%s", text)


def _time_left(remaining, rate, elapsed):
    """", about T left" while work remains and its rate is known, else ", T in all"."""
    if remaining > 0 and rate > 0:
        return f", about {format_duration(remaining / rate)} left"
    if remaining > 0:
        return ""
    return f", {format_duration(elapsed)} in all"
