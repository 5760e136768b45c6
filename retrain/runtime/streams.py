"""Running the network on several batches at once, one per core, in order.

On a CPU, one forward pass spread over every core (TensorFlow's intra-op threads) spends part
of its time splitting each operation and waiting for the slowest share: efficientnet_lite0's
layers are small. Several passes at once, each on its own batch and on one thread, keep every
core on work of its own. On the 2-core machines here, two such passes ran lite0 at 1.15 times
the rate of one pass on both cores, on in-memory tensors and in the bottleneck stage
(1.12-1.18; devices.configure_threads decides when the process runs this way).
"""

import collections
import concurrent.futures


def ordered_map(function, items, streams):
    """Yields (item, function(item)) for each item, in order, with up to `streams` calls running
    at once in worker threads (1: each call in the caller's thread, one after the other).

    Items are taken from `items` in the caller's thread only, so an iterator that is not
    thread-safe (preprocess.pixel_batches) is fine. One item more than `streams` is handed out
    at a time: a worker that finishes takes the next one while the caller is still busy with
    a result. An exception in a call is raised here, at its item's turn; leaving the loop
    early (an error, Ctrl-C, close()) cancels the calls not yet started and waits for the
    running ones, which are short.
    """
    if streams <= 1:
        for item in items:
            yield item, function(item)
        return
    running = collections.deque()
    with concurrent.futures.ThreadPoolExecutor(streams, thread_name_prefix="forward") as pool:
        try:
            for item in items:
                running.append((item, pool.submit(function, item)))
                if len(running) > streams:
                    item, future = running.popleft()
                    yield item, future.result()
            while running:
                item, future = running.popleft()
                yield item, future.result()
        finally:
            for _, future in running:
                future.cancel()
