"""Choosing how many images go through the network at once, by timing real batches.

On a CPU the fastest batch size depends on the network and on the machine: on the 2-core
machines here efficientnet_lite0 ran 15% faster at 16 images per forward pass than at 4
one week, and about 20% slower at 16 another. So a large job on one CPU device reads its
images in batches of the largest candidate size, sends its first batches through the
network in chunks of each candidate size in turn, times them, and runs the rest at the
largest size, or at a smaller one that was clearly faster. Nothing is computed twice (and
for lite0 here, 4, 8 and 16 gave bit-identical vectors).

With a GPU, with several devices, or when the user sets the batch size, there is one size.
"""

import statistics
import threading
import time

from absl import logging
import numpy as np
import tensorflow as tf

from retrain.runtime import devices
from retrain.runtime import streams

# 4 is not among them: in every week timed here it was either the slowest of 4, 8 and 16 (by
# 14% for lite0) or within 3% of 8, and each size tried costs the job batches at that size.
CPU_BATCH_SIZE_CANDIDATES = (8, 16)
# When the network has one thread (a process pinned to one core, a one-core machine), 4 ran
# 10-13% faster than 16 and 8 within 5% of 16 (devices.ONE_CORE_BATCH_SIZE). That is also
# each pass's case when one runs per core (devices.configure_threads, the default without a
# GPU); CPU_BATCH_SIZE_CANDIDATES are for one pass spread over several cores (fine-tuning).
ONE_CORE_BATCH_SIZE_CANDIDATES = (4, 16)
# The first batch at each size is not timed: its first call builds the kernels for the shape.
WARMUP_ROUNDS = 1
TIMED_ROUNDS = 4
# How much faster (in images/s) a smaller size must have run than the largest to be chosen.
# One batch's time varies by 10-12% (standard deviation, within a job) on these shared 2-core
# machines, so a few timed batches a size cannot tell sizes 5-10% apart: in a benchmark run
# where lite0 was 7-10% faster at 16 than at 8, the fastest median of three rounds chose 8 or
# 4 in 11 of 18 jobs, and the stage ran at 0.87 of the ceiling against 0.92 at a fixed 16.
# The margin leaves such near-ties to the largest size, which on a CPU is rarely slower (it
# spreads each call's fixed cost over more images), and still catches a week when 16 is
# 15-20% slower.
SMALLER_SIZE_MARGIN = 0.05
# Fewer images than this run at devices.default_batch_size(): tuning would take a large
# part of the job, to save a few percent of a short one.
MIN_IMAGES_TO_TUNE = 1000


def batch_size_candidates(requested, num_images):
    """The batch sizes a job of num_images tries: one unless it is worth tuning (see above).

    Args:
      requested: the batch size the user asked for, or None.
      num_images: images the job runs through the network.
    """
    if requested:
        return (requested,)
    if (num_images < MIN_IMAGES_TO_TUNE or tf.config.list_physical_devices("GPU")
            or devices.parallel_device_count() > 1):
        return (devices.default_batch_size(),)
    if devices.network_threads() == 1:
        return ONE_CORE_BATCH_SIZE_CANDIDATES
    return CPU_BATCH_SIZE_CANDIDATES


def tuned(forward, candidates, what, passes_at_once=1):
    """forward itself for one candidate; else a TunedForward choosing among them.

    Args:
      forward: function, a batch [n, ...] -> numpy array [n, ...].
      candidates: batch sizes (batch_size_candidates); the batches passed in hold
        max(candidates) images, except the last.
      what: names the stage in the log line ("Bottlenecks", "label_image").
      passes_at_once: how many calls run at once (streams.ordered_map); each call is timed
        on its own, so the rates in the log line are multiplied by it.
    """
    if len(candidates) == 1:
        return forward
    return TunedForward(forward, candidates, what, passes_at_once=passes_at_once)


def forward_batches(forward, batches, candidates, what, forward_streams=None):
    """Runs forward on each batch's pixels, tuned among candidates (see tuned), with
    forward_streams passes at once (streams.ordered_map; None: devices.forward_streams()).

    Args:
      forward: function, pixels [n, H, W, 3] -> numpy array [n, ...].
      batches: preprocess.PixelBatch-es of max(candidates) images (the last may be smaller).
      what: names the job in the tuning's log line ("Bottlenecks", "label_image").

    Yields:
      (batch, forward's output for its pixels), in the order of batches.
    """
    if forward_streams is None:
        forward_streams = devices.forward_streams()
    forward = tuned(forward, candidates, what, forward_streams)
    for batch, outputs in streams.ordered_map(lambda batch: forward(batch.pixels), batches,
                                              forward_streams):
        yield batch, outputs


class TunedForward:
    """Runs forward on each batch in chunks: of each candidate size in turn, timed, for the
    first (WARMUP_ROUNDS + TIMED_ROUNDS) * len(candidates) batches, then of the chosen size:
    the largest, unless a smaller one ran more than SMALLER_SIZE_MARGIN faster."""

    def __init__(self, forward, candidates, what, clock=time.perf_counter, passes_at_once=1):
        self._forward, self._what, self._clock = forward, what, clock
        self._passes_at_once = passes_at_once
        self.candidates = tuple(candidates)
        self.full_batch = max(self.candidates)
        # Each round tries every size, starting one further along, so that no size always
        # comes first (after the readers' head start) or last.
        rounds = WARMUP_ROUNDS + TIMED_ROUNDS
        self._schedule = [self.candidates[(round_ + offset) % len(self.candidates)]
                          for round_ in range(rounds) for offset in range(len(self.candidates))]
        self._seconds_per_image = {size: [] for size in self.candidates}
        # Several forward passes may run at once (streams.ordered_map): each call takes its
        # place in the schedule, and records its time, under the lock.
        self._lock = threading.Lock()
        self._started = 0
        self._finished = 0
        self.chosen = None  # The chunk size, once tuning has ended.

    def __call__(self, batch):
        with self._lock:
            call = self._started
            self._started += 1
        if call >= len(self._schedule):
            # Past the schedule; until the last tuning calls finish, at the largest size.
            return self._run(batch, self.chosen or self.full_batch)
        size = self._schedule[call]
        start = self._clock()
        result = self._run(batch, size)
        elapsed = self._clock() - start
        with self._lock:
            # Only full batches compare fairly; the last batch of a job is usually partial.
            if call >= WARMUP_ROUNDS * len(self.candidates) and len(batch) == self.full_batch:
                self._seconds_per_image[size].append(elapsed / len(batch))
            self._finished += 1
            if self._finished == len(self._schedule):
                self._choose()
        return result

    def _run(self, batch, size):
        if len(batch) <= size:
            return self._forward(batch)
        return np.concatenate([self._forward(batch[start:start + size])
                               for start in range(0, len(batch), size)])

    def _choose(self):
        rates = {size: 1.0 / statistics.median(seconds)
                 for size, seconds in self._seconds_per_image.items() if seconds}
        if not rates:  # Not one full batch was timed: nothing to go by.
            self.chosen = self.full_batch
            return
        fastest = max(rates, key=rates.get)
        largest = max(rates)
        clearly_faster = rates[fastest] > rates[largest] * (1.0 + SMALLER_SIZE_MARGIN)
        self.chosen = fastest if clearly_faster else largest
        at_once = (f", {self._passes_at_once} passes at once" if self._passes_at_once > 1
                   else "")
        logging.info("%s: %d images per forward pass, chosen by timing (images/s%s: %s; the "
                     "largest unless another is over %.0f%% faster).", self._what, self.chosen,
                     at_once, ", ".join(f"{size}: {rate * self._passes_at_once:.1f}"
                                        for size, rate in sorted(rates.items())),
                     100 * SMALLER_SIZE_MARGIN)
