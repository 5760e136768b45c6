"""Progress lines for long stages: done/total, rate, and time left."""

import time

from absl import logging


def format_duration(seconds):
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class ProgressLogger:
    """Logs "<what>: done/total (pct), N <unit>/s, about T left" at most every `interval` seconds."""

    def __init__(self, what, total, unit="images", interval=5.0, clock=time.monotonic):
        self._what, self._total, self._unit = what, total, unit
        self._interval, self._clock = interval, clock
        self._start = self._last_report = clock()
        self.done = 0

    def update(self, count):
        self.done += count
        now = self._clock()
        if now - self._last_report >= self._interval or self.done >= self._total:
            self._last_report = now
            logging.info("%s", self.line(now))

    def line(self, now=None):
        elapsed = max((now if now is not None else self._clock()) - self._start, 1e-9)
        rate = self.done / elapsed
        percent = 100.0 * self.done / max(self._total, 1)
        text = f"{self._what}: {self.done}/{self._total} ({percent:.1f}%), {rate:.1f} {self._unit}/s"
        if self.done < self._total and rate > 0:
            text += f", about {format_duration((self._total - self.done) / rate)} left"
        else:
            text += f", {format_duration(elapsed)} in all"
        return text
