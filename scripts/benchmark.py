#!/usr/bin/env python3
"""Measures retrain's speed against the hardware's ceiling, in one run on the same machine.

  python scripts/benchmark.py [--module efficientnet_lite0] [--images 1000] [--cached_images 10000]

Reports (as a table, and as JSON with --json_out); --skip takes a comma-separated list of:
  ceiling      the module's forward throughput on in-memory tensors: a sweep of
               --batch_sizes finds the fastest, at which it is measured again (over --images
               images, as the two below are) in turns with them; that is the ceiling. It runs
               as many passes at once as the stage does (retrain.runtime.devices.forward_streams:
               without a GPU, one per core, each on one thread; one with --network_threads)
  bottlenecks  retrain's bottleneck stage (read, decode, resize, forward, cache) on --images
               JPEG files of each --photo_sizes (--photo_content: photo-like detail by
               default, which decodes as slowly as camera photos), at retrain's default batch
               size (from 1000 images on, batch_tuning's choice, its tuning included; the
               sizes it chose are reported), and on the first size at the ceiling's best batch
               size too
  reading      the readers alone (retrain.data.preprocess.pixel_batches, one thread per core, at
               normal priority, no network) on the JPEGs of each --photo_sizes: how many
               images/s this CPU can feed a network that runs on a device of its own (a GPU);
               with the ceiling's CPU time per image, it also gives the most of the ceiling
               the stage and label_image can reach where reading shares the network's cores
               (`..._cpu_bound_vs_ceiling`, and `..._vs_cpu_bound`: how close they came)
  label_image  label_image's code path (read, decode, resize, classify, format) on --images
               JPEG files with an exported classifier (the module and a random new layer), at
               its default batch size (batch_tuning's choice, like the bottleneck stage's)
               (--precision bfloat16 runs these three in retrain --bottleneck_precision's
               bfloat16, on CPUs with AVX512_BF16 or AMX)
  cold_start   `python -m retrain.cli.label_image_command --image one.jpg` in a fresh process, split
               into interpreter and imports (TensorFlow above all), model load, and
               predict + print
  reload       finding, hashing and loading a fully cached set of --cached_images images
  training     --steps training steps of batch 100 on --feature_dim-d bottlenecks
  augmentation --steps steps with distorted training images: retrain's way (bottlenecks of
               --images JPEGs and --augmentation_copies cached variants each, in batches, then
               training from memory) against retrain.py's one image per call (per step, 100
               images decoded, distorted and run through the module one by one), which is
               timed for --baseline_steps steps and extrapolated linearly to --steps
  growth       at each of --scale_sizes images (tiny PNGs, cached random vectors): reload time,
               first training step after the TensorFlow import in a real `python -m retrain`,
               cache size, peak memory against the bottleneck array, --steps training steps
  large_cache  training from a synthetic cache of --large_cache_rows vectors (off by default:
               1000000 writes 5 GB) under --large_cache_budget_mb: time, peak memory, size
The ceiling (at its best batch size), bottleneck, reading and label_image measurements take
turns --repeats times and each reports its best: other processes only ever slow a measurement
down, so the best of several is the closest to what the machine can do, and taking turns
exposes all of them to the same conditions. Each ratio to the ceiling is reported twice: best
against best, and the median over the turns of the measurement against the ceiling of its own
turn (`..._vs_ceiling_median_of_turns`), which the host's slow swings in speed move less.
Ratios are only meaningful within one run: the machines are shared and noisy.
"""

import argparse
import collections
import concurrent.futures
import contextlib
import glob
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from retrain.data import distort  # pylint: disable=wrong-import-position
from retrain.data import distortion_settings
from retrain.features import distorted_variants  # pylint: disable=wrong-import-position
import benchmark_scale  # pylint: disable=wrong-import-position
from retrain import config  # pylint: disable=wrong-import-position
from retrain.cli import label_image_command  # pylint: disable=wrong-import-position
from retrain.data import dataset  # pylint: disable=wrong-import-position
from retrain.data import images  # pylint: disable=wrong-import-position
from retrain.data import preprocess  # pylint: disable=wrong-import-position
from retrain.export import saved_model  # pylint: disable=wrong-import-position
from retrain.features import bottleneck_cache  # pylint: disable=wrong-import-position
from retrain.features import bottlenecks  # pylint: disable=wrong-import-position
from retrain.features import modules  # pylint: disable=wrong-import-position
from retrain.predict import label_image  # pylint: disable=wrong-import-position
from retrain.runtime import devices  # pylint: disable=wrong-import-position
from retrain.runtime import precision  # pylint: disable=wrong-import-position
from retrain.training import train  # pylint: disable=wrong-import-position

_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PHOTO_CONTENTS = ("natural", "smooth")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--module", default="efficientnet_lite0", help="module to measure")
    parser.add_argument("--image_size", type=int, default=None, help="for modules that need it")
    parser.add_argument("--images", type=int, default=1000,
                        help="JPEG files for the bottleneck stage and label_image")
    parser.add_argument("--photo_sizes", default="320x240",
                        help="comma-separated sizes (WxH) of those JPEGs; the first is used by "
                        "label_image")
    parser.add_argument("--photo_content", default="natural", choices=PHOTO_CONTENTS,
                        help="what the JPEGs show: natural (photo-like detail, 2.0-2.6 bits per "
                        "pixel, as camera photos take) or smooth (colour gradients, 0.25-0.45 "
                        "bits per pixel, which decode several times faster)")
    parser.add_argument("--batch_sizes", default="2,4,6,8,16,32",
                        help="batch sizes to try for the ceiling")
    parser.add_argument("--precision", default=precision.FLOAT32, choices=precision.PRECISIONS,
                        help="the module's number format (retrain --bottleneck_precision) for "
                        "the ceiling, the bottleneck stage and label_image")
    parser.add_argument("--network_threads", type=int, default=0,
                        help="TensorFlow's threads in this process, intra- and inter-op, and "
                        "one forward pass at a time (0: retrain's default, without a GPU one "
                        "pass per core at once, each on one thread, see "
                        "retrain.runtime.devices.configure_threads). 2 on a 2-core machine is one pass "
                        "spread over both cores, as retrain ran before. 1 leaves a core to the "
                        "readers, as a GPU running the network leaves them every core: the "
                        "ceiling drops to one core's, and the stage shows whether reading "
                        "hides behind the network when a core is free for it")
    parser.add_argument("--repeats", type=int, default=3,
                        help="turns of ceiling, bottlenecks, reading and label_image; each "
                             "reports its best and the median of its ratio to its turn's "
                             "ceiling")
    parser.add_argument("--cached_images", type=int, default=10000, help="images in the reload test")
    parser.add_argument("--steps", type=int, default=4000, help="training steps")
    parser.add_argument("--feature_dim", type=int, default=1280, help="bottleneck size for training")
    parser.add_argument("--augmentation_copies", type=int,
                        default=config.DEFAULT_AUGMENTATION_COPIES,
                        help="cached distorted variants per training image")
    parser.add_argument("--baseline_steps", type=int, default=3,
                        help="steps of the one-image-per-call baseline to time")
    parser.add_argument("--scale_sizes", default="1000,10000,100000",
                        help="image counts for the growth table")
    parser.add_argument("--large_cache_rows", type=int, default=0,
                        help="vectors in the large-cache part (0: skip it)")
    parser.add_argument("--large_cache_budget_mb", type=int, default=1024,
                        help="memory budget the large cache must exceed (--bottleneck_memory_mb)")
    parser.add_argument("--work_dir", default=None, help="where to build (default: a temp dir)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip")
    parser.add_argument("--json_out", default=None, help="also write the results here")
    return parser.parse_args()


def write_photos(folder, count, size, classes=5, seed=0, content="natural"):
    """Writes `count` distinct JPEGs of size (width, height), quality 90, in `classes` folders.

    content "natural": photo-like detail (natural_texture), 2.0-2.6 bits per pixel, which is
    what decoding costs depend on; "smooth": two-by-two colour gradients, 0.25-0.45 bits per
    pixel, which decode several times faster than camera photos (the benchmark's photos
    before December 2026).
    """
    rng = np.random.default_rng(seed)
    width, height = size
    textures = None
    if content == "natural":  # Photos are crops of these: one texture per photo costs seconds.
        textures = [natural_texture(rng, 2 * height, 2 * width) for _ in range(4)]
    for index in range(count):
        label_dir = os.path.join(folder, f"class_{index % classes}")
        os.makedirs(label_dir, exist_ok=True)
        if textures is None:
            corners = rng.integers(0, 256, (2, 2, 3)).astype(np.uint8)
            photo = Image.fromarray(corners).resize((width, height), Image.BILINEAR)
        else:
            photo = Image.fromarray(_natural_crop(rng, textures, height, width))
        photo.save(os.path.join(label_dir, f"photo_{index:06d}.jpg"), quality=90)


# The spectrum's slope and the contrast, chosen so that a quality-90 JPEG takes 2.0-2.6 bits
# per pixel from 320x240 to 1600x1200: scikit-learn's and scikit-image's sample photos (china,
# flower, coffee, astronaut, chelsea) take 1.4-2.9 re-encoded the same way.
_TEXTURE_SLOPE = 1.2
_TEXTURE_CONTRAST = 28.0


def jpeg_bits_per_pixel(folder):
    """The mean compressed size of the JPEGs under folder, in bits per pixel."""
    bits, pixels = 0, 0
    for path in glob.glob(os.path.join(folder, "*", "*.jpg")):
        with Image.open(path) as photo:
            pixels += photo.width * photo.height
        bits += 8 * os.path.getsize(path)
    return bits / pixels


def natural_texture(rng, height, width):
    """uint8 [height, width, 3] noise with natural images' 1/f amplitude spectrum (detail at
    every scale, like a photo) and correlated colour channels."""
    frequency_y = np.fft.fftfreq(height)[:, None]
    frequency_x = np.fft.rfftfreq(width)[None, :]
    frequency = np.hypot(frequency_y, frequency_x)
    frequency[0, 0] = 1.0
    channels = []
    for _ in range(3):
        spectrum = (rng.normal(size=frequency.shape) + 1j * rng.normal(size=frequency.shape))
        spectrum /= frequency ** _TEXTURE_SLOPE
        spectrum[0, 0] = 0.0
        channels.append(np.fft.irfft2(spectrum, s=(height, width)))
    texture = np.stack(channels, axis=-1) @ np.array([[1.0, 0.8, 0.7], [0.8, 1.0, 0.8],
                                                      [0.7, 0.8, 1.0]])
    texture = (texture - texture.mean()) / texture.std() * _TEXTURE_CONTRAST + 128
    return np.clip(texture, 0, 255).astype(np.uint8)


def _natural_crop(rng, textures, height, width):
    """uint8 [height, width, 3]: a random crop of one texture, maybe mirrored, its colour
    channels in a random order: every photo is a different file."""
    texture = textures[rng.integers(len(textures))]
    top = rng.integers(texture.shape[0] - height + 1)
    left = rng.integers(texture.shape[1] - width + 1)
    crop = texture[top:top + height, left:left + width, rng.permutation(3)]
    return np.ascontiguousarray(crop[:, ::-1] if rng.integers(2) else crop)


def measure_ceiling(layer, image_size, batch_sizes, seconds=4.0, images=None, forward_streams=1):
    """(images/s, CPU ms/image) of the bare forward pass on in-memory tensors, per batch size:
    for `seconds`, or, if given, over (at least) `images` images; with forward_streams > 1,
    that many threads each call it on a batch of their own at once, as the stage does
    (devices.forward_streams)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    forward = tf.function(lambda batch: layer(batch, training=False))
    results = {}
    for batch_size in batch_sizes:
        batches = [tf.random.uniform([batch_size, *image_size, 3]) for _ in range(forward_streams)]
        forward(batches[0]).numpy()  # Trace and warm up.
        counts = [0] * forward_streams
        start, cpu_start = time.perf_counter(), time.process_time()

        def run(stream):
            while (sum(counts) < images if images else time.perf_counter() - start < seconds):
                forward(batches[stream]).numpy()
                counts[stream] += batch_size

        with concurrent.futures.ThreadPoolExecutor(forward_streams) as pool:
            for done in [pool.submit(run, stream) for stream in range(forward_streams)]:
                done.result()
        results[batch_size] = _rates(sum(counts), start, cpu_start)
    return results


def _rates(count, start, cpu_start):
    """(images/s, CPU ms/image) since perf_counter() was start and process_time() cpu_start."""
    return (count / (time.perf_counter() - start),
            1000.0 * (time.process_time() - cpu_start) / count)


def measure_bottleneck_stage(layer, module, folder, batch_size):
    """(images/s, CPU ms/image) of retrain's bottleneck stage on JPEG files (cache writes included);
    batch_size None is retrain's default."""
    collection = dataset.find_images(folder)
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = bottleneck_cache.BottleneckCache(cache_dir)
        dim = modules.feature_dim(module)
        start, cpu_start = time.perf_counter(), time.process_time()
        vectors, failed = bottlenecks.compute_and_store(
            layer, module, collection.images, cache.writer(dim), batch_size, 10**8)
        rates = _rates(len(collection.images), start, cpu_start)
    assert not failed and len(vectors) == len(collection.images)
    return rates


def measure_reading(module, folder, batch_size=16):
    """(images/s, CPU ms/image) of the readers alone: pixel_batches at normal priority on every
    core, nothing else running. The stage can go no faster than this on any device."""
    paths = [image.path for image in dataset.find_images(folder).images]
    count, start, cpu_start = 0, time.perf_counter(), time.process_time()
    for batch in preprocess.pixel_batches(paths, module.image_size, batch_size, 10**8,
                                          low_priority=False):
        assert batch.ok.all()
        count += len(batch.indices)
    return _rates(count, start, cpu_start)


def export_random_classifier(layer, module, saved_model_dir, classes=5):
    """Exports the module with a random new layer: label_image's speed does not need training."""
    rng = np.random.default_rng(3)
    dim = modules.feature_dim(module)
    head = train.Head(rng.normal(0, 0.01, (dim, classes)).astype(np.float32),
                      np.zeros(classes, np.float32))
    saved_model.export_saved_model(layer, head, [f"class_{index}" for index in range(classes)],
                              module.image_size, saved_model_dir)


def measure_label_image(classifier, folder, batch_size):
    """(images/s, CPU ms/image) of label_image's path: read, decode, resize, classify, format;
    batch_size None is label_image's default."""
    paths = label_image.find_image_files(folder)
    with open(os.devnull, "w", encoding="utf-8") as null, contextlib.redirect_stdout(null):
        start, cpu_start = time.perf_counter(), time.process_time()
        for prediction in label_image.classify_files(classifier, paths, batch_size):
            top = label_image.top_predictions(prediction, classifier.labels, 5)
            print(label_image_command.format_text(prediction, top, with_path=True))
        return _rates(len(paths), start, cpu_start)


# Runs in a fresh interpreter: label_image_cli's steps, each followed by a timestamp.
_COLD_START_SCRIPT = """
import sys, time
import tensorflow
from retrain.cli import label_image_command
from retrain.predict import label_image
imported = time.time()
classifier = label_image_cli.load_model(sys.argv[1])
loaded = time.time()
for prediction in label_image.classify_files(classifier, [sys.argv[2]]):
    top = label_image.top_predictions(prediction, classifier.labels, 5)
    print(label_image_cli.format_text(prediction, top, with_path=False), file=sys.stderr)
print(imported, loaded, time.time())
"""


def cold_start_results(saved_model_dir, work_dir, repeats):
    """The cold start of label_image on one 640x480 JPEG, as result rows."""
    write_photos(os.path.join(work_dir, "one"), 1, (640, 480))
    image = os.path.join(work_dir, "one", "class_0", "photo_000000.jpg")
    return {f"label_image_one_image_{name}_seconds": round(seconds, 2)
            for name, seconds in measure_cold_start(saved_model_dir, image, repeats).items()}


def measure_cold_start(saved_model_dir, image_path, repeats):
    """Seconds from starting a process to the printed result for one image, best of repeats.

    Returns {"total": the real command, and the parts of an instrumented copy of it:
    "imports" (interpreter, TensorFlow and retrain), "model_load", "predict_and_print"}.
    """
    command = [sys.executable, "-m", "retrain.cli.label_image_command",
               f"--saved_model_dir={saved_model_dir}", "--image", image_path]
    totals, parts = [], []
    for _ in range(repeats):
        start = time.time()
        subprocess.run(command, cwd=_ROOT, check=True, capture_output=True)
        totals.append(time.time() - start)
        start = time.time()
        completed = subprocess.run([sys.executable, "-c", _COLD_START_SCRIPT, saved_model_dir,
                                    image_path], cwd=_ROOT, check=True, capture_output=True,
                                   text=True)
        imported, loaded, done = (float(value) for value in completed.stdout.split())
        parts.append({"imports": imported - start, "model_load": loaded - imported,
                      "predict_and_print": done - loaded, "instrumented_total": done - start})
    best = min(parts, key=lambda part: part["instrumented_total"])
    return {"total": min(totals), **best}


def measure_cached_reload(count, feature_dim, work_dir):
    """Seconds to find, hash and load `count` images that are all in the cache."""
    folder = os.path.join(work_dir, "cached")
    rng = np.random.default_rng(1)
    for index in range(count):
        label_dir = os.path.join(folder, f"class_{index % 5}")
        os.makedirs(label_dir, exist_ok=True)
        pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(label_dir, f"image_{index:06d}.png"))
    module = modules.FeatureModule("benchmark", "", (224, 224), "benchmark-module")
    cache_root = os.path.join(work_dir, "bottlenecks")
    cache = bottleneck_cache.BottleneckCache(bottleneck_cache.module_cache_dir(cache_root, module))
    cache.prepare({"feature_dim": feature_dim})
    writer = cache.writer(feature_dim, flush_every=4096)
    for image in dataset.find_images(folder).images:
        writer.add(image.content_key, rng.random(feature_dim, dtype=np.float32))
    writer.flush()
    start = time.perf_counter()
    collection = dataset.find_images(folder)
    loaded = bottlenecks.get_bottlenecks(collection.images, module, cache_root, 64, 10**8)
    elapsed = time.perf_counter() - start
    assert loaded.computed == 0 and len(loaded.image_files) == count
    cache_bytes = sum(os.path.getsize(os.path.join(cache.directory, name))
                      for name in os.listdir(cache.directory) if name.startswith("shard-"))
    return elapsed, cache_bytes / (count * feature_dim * 4)


def measure_training(steps, feature_dim, examples=10000, classes=5):
    rng = np.random.default_rng(2)
    labels = rng.integers(0, classes, examples).astype(np.int32)
    features = (rng.random((examples, feature_dim)) + labels[:, None] * 0.01).astype(np.float32)
    settings = train.TrainingSettings(steps=steps, batch_size=100, learning_rate=0.01,
                                      eval_step_interval=10, validation_batch_size=100, seed=0)
    start = time.perf_counter()
    train.train_head(features, labels, features[:1000], labels[:1000], classes, settings)
    return time.perf_counter() - start


def measure_against_ceiling(args, skip, work_dir, module, layer, saved_model_dir):
    """The ceiling's best batch size from a sweep; then the ceiling at that batch size, the
    bottleneck stage, the readers alone and label_image, in turns; the best of each."""
    photo_sizes = args.photo_sizes.split(",")
    folders = {}
    if not {"bottlenecks", "label_image", "reading"} <= skip:
        for photo_size in photo_sizes:
            folders[photo_size] = os.path.join(work_dir, f"photos_{photo_size}")
            write_photos(folders[photo_size], args.images,
                         tuple(int(value) for value in photo_size.split("x")),
                         content=args.photo_content)
    classifier, load_seconds = None, None
    if "label_image" not in skip:
        start = time.perf_counter()
        classifier = label_image.load_classifier(saved_model_dir)
        load_seconds = time.perf_counter() - start
    forward_streams = devices.forward_streams()  # As many as the stage and label_image run.
    sweep = {}
    for _ in range(args.repeats):
        _keep_best(sweep, measure_ceiling(layer, module.image_size,
                                          [int(value) for value in args.batch_sizes.split(",")],
                                          forward_streams=forward_streams))
    best_batch = max(sweep, key=lambda size: sweep[size][0])
    # The ceiling is measured again, as often as what is compared with it: the sweep's best is
    # the best of (batch sizes x repeats) noisy samples, which would flatter it.
    turns = []
    # What a user gets: retrain's and label_image's default batch size (batch_tuning's choice
    # for a job this large, tuning included), against the ceiling's best, whichever that is.
    with ChosenBatchSizes() as chosen:
        for _ in range(args.repeats):
            # Over as many images as the stage and label_image take, so that every best is
            # the best of windows of the same length: short windows catch more of the moments
            # when the machine is quiet, which would flatter the ceiling.
            turn = {"ceiling": measure_ceiling(layer, module.image_size, [best_batch],
                                               images=args.images,
                                               forward_streams=forward_streams)[best_batch]}
            if "bottlenecks" not in skip:
                turn.update({f"bottlenecks_{photo_size}": measure_bottleneck_stage(
                    layer, module, folders[photo_size], None) for photo_size in photo_sizes})
                # What --bottleneck_batch_size=<best> gives.
                turn["bottlenecks_at_best_batch"] = measure_bottleneck_stage(
                    layer, module, folders[photo_sizes[0]], best_batch)
            if "reading" not in skip:
                turn.update({f"reading_{photo_size}": measure_reading(module, folders[photo_size])
                             for photo_size in photo_sizes})
            if "label_image" not in skip:
                turn["label_image"] = measure_label_image(classifier, folders[photo_sizes[0]],
                                                          None)
            turns.append(turn)
    results = {"ceiling_sweep_images_per_second": {str(size): round(rate, 1)
                                                   for size, (rate, _) in sweep.items()},
               "best_batch_size": best_batch, "forward_streams": forward_streams}
    results.update({f"photos_{photo_size}_bits_per_pixel": round(jpeg_bits_per_pixel(folder), 2)
                    for photo_size, folder in folders.items()})
    results.update(_ceiling_results(turns, args, photo_sizes, load_seconds))
    results["default_batch_sizes_chosen"] = chosen.summary()
    return results


class ChosenBatchSizes(logging.Handler):
    """Counts the batch sizes batch_tuning chose, from its log line, while in a with block."""

    _PATTERN = re.compile(r"^(\S+): (\d+) images per forward pass, chosen by timing")

    def __init__(self):
        super().__init__(logging.INFO)
        self.counts = collections.Counter()
        self._absl_logger = logging.getLogger("absl")
        self._saved = None

    def emit(self, record):
        match = self._PATTERN.match(record.getMessage())
        if match:
            self.counts[f"{match.group(1)} {match.group(2)}"] += 1

    def __enter__(self):
        self._saved = (self._absl_logger.level, self._absl_logger.propagate)
        # INFO records are made, and come here only: the progress lines would flood the output.
        self._absl_logger.setLevel(logging.INFO)
        self._absl_logger.propagate = False
        self._absl_logger.addHandler(self)
        return self

    def __exit__(self, *exc_info):
        self._absl_logger.removeHandler(self)
        self._absl_logger.setLevel(self._saved[0])
        self._absl_logger.propagate = self._saved[1]

    def summary(self):
        """{"<stage> <size>": times chosen}; {} when no job was large enough to tune."""
        return dict(sorted(self.counts.items()))


def _keep_best(best, rates):
    """The highest images/s and, separately, the lowest CPU ms/image of each measurement."""
    for name, (rate, cpu_ms) in rates.items():
        old_rate, old_cpu_ms = best.get(name, (0.0, float("inf")))
        best[name] = (max(old_rate, rate), min(old_cpu_ms, cpu_ms))


def _ceiling_results(turns, args, photo_sizes, load_seconds):
    """Result rows: rates and their ratio to the ceiling, in wall-clock and in CPU time.

    Each measurement's best over the turns, against the ceiling's best; and the median over
    the turns of its ratio to the ceiling measured in the same turn. The host's speed drifts
    by 10-20% over tens of seconds on these shared machines, and a measurement and the ceiling
    next to it see much the same drift, so the median of paired ratios is the steadier of the
    two wall-clock estimates when there are enough turns (--repeats 7 or more).

    On a busy machine the CPU-time ratio (ceiling CPU ms per image / measured CPU ms per image)
    is the steadier estimate of the wall-clock ratio on an idle one, where the network keeps
    every core busy: a process with more threads than the ceiling's gets a larger share of
    contended cores, which flatters the wall-clock ratio.

    Where the readers were measured on the same photos: the CPU's bound (cpu_bound), and the
    median of turns against it.
    """
    best = {}
    for turn in turns:
        _keep_best(best, turn)
    rate, cpu_ms = best["ceiling"]
    results = {"ceiling_images_per_second": round(rate, 1),
               "ceiling_cpu_ms_per_image": round(cpu_ms, 2)}
    # (result label, measurement, the readers' measurement on the same photos: None for those).
    measured = [(f"bottleneck_stage_{size}", f"bottlenecks_{size}", f"reading_{size}")
                for size in photo_sizes]
    measured.append((f"bottleneck_stage_{photo_sizes[0]}_at_best_batch_size",
                     "bottlenecks_at_best_batch", f"reading_{photo_sizes[0]}"))
    measured.append((f"label_image_{args.images}", "label_image", f"reading_{photo_sizes[0]}"))
    measured.extend((f"reading_alone_{size}", f"reading_{size}", None) for size in photo_sizes)
    for label, name, reading in measured:
        if name in best:
            median_of_turns = statistics.median(turn[name][0] / turn["ceiling"][0]
                                                for turn in turns)
            results[f"{label}_images_per_second"] = round(best[name][0], 1)
            results[f"{label}_vs_ceiling"] = round(best[name][0] / rate, 3)
            results[f"{label}_vs_ceiling_median_of_turns"] = round(median_of_turns, 3)
            results[f"{label}_cpu_ms_per_image"] = round(best[name][1], 2)
            results[f"{label}_vs_ceiling_in_cpu_time"] = round(cpu_ms / best[name][1], 3)
            if reading in best:
                bound = cpu_bound(cpu_ms, best[reading][1])
                results[f"{label}_cpu_bound_vs_ceiling"] = round(bound, 3)
                results[f"{label}_vs_cpu_bound"] = round(median_of_turns / bound, 3)
    if load_seconds is not None:
        results["label_image_model_load_seconds"] = round(load_seconds, 2)
    return results


def cpu_bound(network_cpu_ms, reading_cpu_ms):
    """The most of the ceiling the stage and label_image can reach when reading shares the
    network's cores (no GPU).

    When the network alone keeps every core busy, as it does on a CPU, each image costs its
    forward pass's CPU time plus its reading's, and the cores' time is all there is. On a GPU,
    or with a core the network leaves free (--network_threads 1 on 2 cores), reading runs
    beside the network and this bound does not apply.
    """
    return network_cpu_ms / (network_cpu_ms + reading_cpu_ms)


# Every distortion on, so both ways pay for all of them.
BENCHMARK_DISTORTIONS = distortion_settings.Distortions(flip_left_right=True, random_crop=10, random_scale=10,
                                            random_brightness=10)


def measure_augmentation(args, work_dir):
    """Seconds for --steps steps with augmentation: retrain's cached variants against
    retrain.py's one image per call (extrapolated from --baseline_steps steps)."""
    size = (args.image_size, args.image_size) if args.image_size else None
    module = modules.resolve_module(args.module, size)
    photos = os.path.join(work_dir, "augmentation_photos")
    first_size = args.photo_sizes.split(",")[0]
    write_photos(photos, args.images, tuple(int(v) for v in first_size.split("x")),
                 content=args.photo_content)
    collection = dataset.find_images(photos)
    cached = time_cached_augmentation(module, collection, args.augmentation_copies, args.steps,
                                      os.path.join(work_dir, "augmentation_cache"))
    per_step = time_one_image_per_call_steps(module, collection, args.baseline_steps)
    baseline = per_step * args.steps
    total = sum(cached.values())
    # Per training image, the cached way costs (1 + copies) batched forward passes; the
    # baseline costs the same whatever the number of images.
    per_image = (cached["bottlenecks"] + cached["variants"]) / len(collection.images)
    return {
        "augmentation_training_images": len(collection.images),
        "augmentation_copies": args.augmentation_copies,
        "augmentation_cached_seconds": {key: round(value, 1) for key, value in cached.items()},
        f"augmentation_cached_seconds_{args.steps}_steps": round(total, 1),
        "augmentation_baseline_seconds_per_step": round(per_step, 2),
        f"augmentation_baseline_seconds_{args.steps}_steps_extrapolated_from_{args.baseline_steps}":
            round(baseline, 0),
        "augmentation_speedup": round(baseline / total, 1),
        "augmentation_10x_up_to_training_images": int((baseline / 10 - cached["training"])
                                                      / per_image),
    }


def time_cached_augmentation(module, collection, copies, steps, cache_dir):
    """Seconds per part of retrain's way: originals' and variants' bottlenecks, training."""
    seconds = {}
    start = time.perf_counter()
    originals = bottlenecks.get_bottlenecks(collection.images, module, cache_dir, None, 10**8)
    seconds["bottlenecks"] = time.perf_counter() - start
    labels = np.array([image.label_index for image in originals.image_files], np.int32)
    start = time.perf_counter()
    (features, labels, _), result = distorted_variants.add_training_variants(
        (originals.features, labels, originals.image_files), module, cache_dir, None, 10**8,
        BENCHMARK_DISTORTIONS, copies)
    seconds["variants"] = time.perf_counter() - start
    assert result.computed == copies * len(collection.images)
    settings = train.TrainingSettings(steps=steps, batch_size=100, learning_rate=0.01,
                                      eval_step_interval=10, validation_batch_size=100, seed=0)
    start = time.perf_counter()
    train.train_head(features, labels, originals.features, labels[:len(originals.features)],
                     len(collection.labels), settings)
    seconds["training"] = time.perf_counter() - start
    return seconds


def time_one_image_per_call_steps(module, collection, steps, batch_size=100):
    """Seconds per step of retrain.py's distorted training: for each of batch_size random
    images, read and decode the file, distort it and run the module on it alone; then one SGD
    step on the batch. Decoding, distortion and module are retrain's own, so only the
    batching differs."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    layer = modules.load_feature_extractor(module)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8),
                                  tf.TensorSpec([2], tf.int64)])
    def distort_and_extract(image, seed):
        distorted = distort.distort_and_resize(image, module.image_size, BENCHMARK_DISTORTIONS,
                                               seed)
        return layer(distorted[None], training=False)[0]

    sgd_step = _softmax_sgd_step(modules.feature_dim(module), len(collection.labels))
    rng = np.random.default_rng(0)

    def one_step():
        chosen = [collection.images[index]
                  for index in rng.integers(len(collection.images), size=batch_size)]
        vectors = [distort_and_extract(images.read_image_file(image.path, 10**8),
                                       rng.integers(-2**62, 2**62, size=2)).numpy()
                   for image in chosen]
        sgd_step(np.stack(vectors), np.array([image.label_index for image in chosen], np.int32))

    one_step()  # Trace and warm up, untimed.
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    return (time.perf_counter() - start) / steps


def _softmax_sgd_step(feature_dim, classes, learning_rate=0.01):
    """A compiled SGD step of a softmax layer: retrain.py's train step."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    weights = tf.Variable(tf.random.truncated_normal([feature_dim, classes], stddev=0.001))
    biases = tf.Variable(tf.zeros([classes]))

    @tf.function
    def step(features, labels):
        with tf.GradientTape() as tape:
            logits = features @ weights + biases
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        for variable, gradient in zip((weights, biases), tape.gradient(loss, (weights, biases))):
            variable.assign_sub(learning_rate * gradient)
        return loss

    return step


def measure_scale_parts(args, skip, work_dir, results):
    """The growth table and the large cache (scripts/benchmark_scale.py)."""
    if "growth" not in skip:
        sizes = [int(size) for size in args.scale_sizes.split(",") if size]
        results["growth"] = benchmark_scale.measure_growth(work_dir, sizes, args.module, args.steps)
    if "large_cache" not in skip and args.large_cache_rows > 0:
        results["large_cache"] = benchmark_scale.measure_large_cache(
            work_dir, args.large_cache_rows, args.feature_dim, args.steps, args.large_cache_budget_mb)


def print_growth_table(growth):
    if not growth:
        return
    sizes = [size for size in growth if size != "fixed_overhead_bytes"]
    figures = [name for name, value in growth[sizes[0]].items() if not isinstance(value, dict)]
    print(f"\n| figure | {' | '.join(f'{size:,} images' for size in sizes)} |")
    print(f"| --- |{' --- |' * len(sizes)}")
    for figure in figures:
        print(f"| {figure} | {' | '.join(str(growth[size][figure]) for size in sizes)} |")
    print(f"Fixed overhead (the same run on 100 images): "
          f"{growth['fixed_overhead_bytes'] / 2**20:.0f} MB peak RSS.")


def main():
    args = parse_args()
    skip = set(filter(None, args.skip.split(",")))
    results = {"module": args.module}
    if args.network_threads:
        devices.set_tensorflow_threads(args.network_threads)
        results["network_threads"] = args.network_threads
    else:
        devices.configure_threads()  # As retrain and label_image do.
    if args.work_dir:
        os.makedirs(args.work_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.work_dir) as work_dir:
        if not {"ceiling", "bottlenecks", "reading", "label_image", "cold_start"} <= skip:
            module = modules.resolve_module(
                args.module, (args.image_size, args.image_size) if args.image_size else None)
            layer = modules.load_feature_extractor(module)
            saved_model_dir = os.path.join(work_dir, "classifier")
            if not {"label_image", "cold_start"} <= skip:
                export_random_classifier(layer, module, saved_model_dir)
            if not {"ceiling", "bottlenecks", "reading", "label_image"} <= skip:
                precision.check(args.precision, "--precision")
                results["precision"] = args.precision
                results["photo_content"] = args.photo_content
                # The ceiling too: it is the limit of the forward pass in that number format.
                with precision.forward_in(args.precision):
                    results.update(measure_against_ceiling(args, skip, work_dir, module, layer,
                                                           saved_model_dir))
            if "cold_start" not in skip:
                results.update(cold_start_results(saved_model_dir, work_dir, args.repeats))
        if "reload" not in skip:
            seconds, size_ratio = measure_cached_reload(args.cached_images, args.feature_dim, work_dir)
            results[f"cached_reload_seconds_{args.cached_images}"] = round(seconds, 2)
            results["cache_size_vs_raw_float32"] = round(size_ratio, 4)
        if "training" not in skip:
            results[f"training_seconds_{args.steps}_steps"] = round(
                measure_training(args.steps, args.feature_dim), 2)
        if "augmentation" not in skip:
            results.update(measure_augmentation(args, work_dir))
        measure_scale_parts(args, skip, work_dir, results)
    print("| measure | value |\n| --- | --- |")
    for key, value in results.items():
        if key != "growth":
            print(f"| {key} | {value} |")
    print_growth_table(results.get("growth"))
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as output:
            json.dump(results, output, indent=2)


if __name__ == "__main__":
    main()
