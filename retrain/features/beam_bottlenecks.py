"""Computing the bottleneck cache with an Apache Beam pipeline (`retrain bottlenecks`).

For image sets too big for one host: the launcher lists the images, resolves the module and
writes module.json exactly as retrain does, then hands the uncached images to a Beam runner
(Direct here; Dataflow, Flink or Spark elsewhere):

  Create((path, content key)) -> Reshuffle -> BatchElements -> ComputeBottlenecksFn

Each worker loads the module once (DoFn.setup), decodes with the same Pillow + TensorFlow
resize that retrain uses, and writes its vectors as atomically renamed shards of the same
cache format into the module's cache folder, so `retrain` trains from them without
recomputing. On a distributed runner that folder must be a filesystem every worker mounts.
"""

import dataclasses
import os
import time

from absl import logging
import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
import numpy as np

from retrain.data import dataset
from retrain.data import images
from retrain.data import preprocess
from retrain.errors import UserError
from retrain.features import bottleneck_cache
from retrain.features import bottlenecks
from retrain.features import modules
from retrain.features.bottleneck_cache import BottleneckCache, module_cache_dir
from retrain.runtime import devices

_METRICS_NAMESPACE = "retrain"
_COMPUTED = "bottlenecks_computed"
_UNDECODABLE = "undecodable_images"
# Seconds between a worker's progress lines.
_PROGRESS_INTERVAL = 10.0


@dataclasses.dataclass
class BeamReport:
    """What one `retrain bottlenecks` run did. Counts are of distinct image contents."""

    images: int  # distinct images found under image_dir
    cached_before: int  # already in the cache when the run started
    to_compute: int  # handed to the Beam pipeline
    computed: int  # vectors the workers wrote (Beam counter)
    undecodable: int  # images the workers could not decode (Beam counter)
    missing_after: int  # images still not in the cache afterwards (re-read from disk)
    cache_dir: str


def compute_cache(config, pipeline_args):
    """Fills the bottleneck cache of config's module for every image under config.image_dir.

    Args:
      config: a resolved RetrainConfig (image_dir, bottleneck_dir, tfhub_module, image_size,
        backbone_cache_dir, keras_weights, bottleneck_batch_size, max_image_pixels are used).
      pipeline_args: Beam pipeline options as command-line strings, e.g. ["--runner=DirectRunner"].

    Returns:
      BeamReport.

    Raises:
      UserError: a bad folder, module or pipeline option (checked before the pipeline starts).
    """
    check_local_path(config.bottleneck_dir)
    root = create_pipeline(pipeline_options(pipeline_args))
    collection = dataset.find_images(config.image_dir)
    module = modules.resolve_module(config.tfhub_module, config.image_size,
                                    config.backbone_cache_dir, config.keras_weights)
    cache, feature_dim = prepare_cache(config.bottleneck_dir, module)
    wanted = unique_images(collection.images)
    # Absolute paths: a remote worker does not share the launcher's working folder.
    tasks = [(os.fsencode(os.path.abspath(image.path)), image.content_key)
             for image, cached in zip(wanted, is_cached(cache, feature_dim, wanted)) if not cached]
    logging.info("Bottlenecks: %d of %d images cached, %d to compute with Apache Beam.",
                 len(wanted) - len(tasks), len(wanted), len(tasks))
    counts = {_COMPUTED: 0, _UNDECODABLE: 0}
    if tasks:
        batch_size = config.bottleneck_batch_size or devices.default_batch_size()
        with root:
            add_compute_transforms(root, tasks, module, cache.directory, feature_dim, batch_size,
                                   config.max_image_pixels)
        counts = read_counters(root.result)
    missing_after = int(np.count_nonzero(~is_cached(cache, feature_dim, wanted)))
    return BeamReport(len(wanted), len(wanted) - len(tasks), len(tasks), counts[_COMPUTED],
                      counts[_UNDECODABLE], missing_after, cache.directory)


def is_cached(cache, feature_dim, image_files):
    """bool per image: whether the cache holds its vector. Only the keys are read, as
    retrain's own lookup does (bottleneck_cache.locate_keys): a cache this command is for may
    not fit in memory."""
    keys = [image.content_key for image in image_files]
    return bottleneck_cache.locate_keys(cache.open_shards(feature_dim), keys) >= 0


def check_local_path(bottleneck_dir):
    """The cache is written with ordinary file calls: URLs such as gs:// are refused."""
    if "://" in bottleneck_dir:
        raise UserError(f"--bottleneck_dir {bottleneck_dir!r} is a URL, which the bottleneck cache "
                        "cannot write; mount the bucket as a folder (e.g. with gcsfuse) on the "
                        "launcher and every worker and pass that folder.")


def pipeline_options(pipeline_args):
    """PipelineOptions from command-line strings; an option Beam does not know is an error.

    Beam itself only warns about (and drops) unknown options, which would hide a misspelt flag.
    """
    options = PipelineOptions(pipeline_args)
    parsers = []
    options.get_all_options(add_extra_args_fn=parsers.append)
    _, unknown = parsers[0].parse_known_args(pipeline_args)
    if unknown:
        raise UserError(f"Unknown flag(s) {' '.join(unknown)}: neither a `retrain bottlenecks` flag "
                        "nor an Apache Beam pipeline option; check the spelling (see --help).")
    return options


def create_pipeline(options):
    """A beam.Pipeline on the runner that options name, or a UserError if it cannot be made."""
    try:
        return beam.Pipeline(options=options)
    except (ValueError, ImportError) as error:  # An unknown runner, or one missing its libraries.
        runner = options.get_all_options()["runner"]
        raise UserError(f"Cannot use Beam runner --runner={runner} ({error}); pass FnApiRunner, "
                        "DirectRunner, DataflowRunner, FlinkRunner, SparkRunner or another "
                        "installed runner.") from error


def prepare_cache(bottleneck_dir, module):
    """Creates the module's cache folder and its module.json, as bottlenecks.get_bottlenecks does.

    Loads the module on the launcher: its feature size names the shard format, and a module
    that does not fit fails here, before any worker starts.

    Returns:
      (BottleneckCache, feature_dim int).
    """
    feature_dim = modules.feature_dim(module)
    cache = BottleneckCache(module_cache_dir(bottleneck_dir, module))
    cache.prepare({"handle": module.handle, "identity": module.identity,
                   "image_size": list(module.image_size), "feature_dim": feature_dim})
    return cache, feature_dim


def unique_images(image_files):
    """One dataset.ImageFile per content key: identical files share one vector."""
    by_key = {}
    for image in image_files:
        by_key.setdefault(image.content_key, image)
    return list(by_key.values())


def add_compute_transforms(root, tasks, module, cache_dir, feature_dim, batch_size, max_pixels):
    """Adds Create -> Reshuffle -> BatchElements -> ComputeBottlenecksFn to a Beam pipeline.

    Args:
      root: beam.Pipeline.
      tasks: [(path bytes (os.fsencode), content key bytes)] of the images to compute.
    """
    # Reshuffle lets the runner spread the images over workers instead of running all of
    # them in the one bundle that Create makes.
    return (root
            | "ListImages" >> beam.Create(tasks)
            | "Distribute" >> beam.Reshuffle()
            | "Batch" >> beam.BatchElements(min_batch_size=batch_size, max_batch_size=batch_size)
            | "ComputeBottlenecks" >> beam.ParDo(
                ComputeBottlenecksFn(module, cache_dir, feature_dim, max_pixels)))


def read_counters(result):
    """{counter name: committed (else attempted) value} of the retrain counters of a finished run."""
    counts = {_COMPUTED: 0, _UNDECODABLE: 0}
    query = result.metrics().query(MetricsFilter().with_namespace(_METRICS_NAMESPACE))
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        counts[counter.key.metric.name] += value or 0
    return counts


class ComputeBottlenecksFn(beam.DoFn):
    """Turns batches of (path bytes, content key) into cache shards in cache_dir.

    Every bundle writes its own shards (renamed into place when complete), so a retried or
    killed bundle leaves at worst a duplicate record, which the cache tolerates.
    """

    def __init__(self, module, cache_dir, feature_dim, max_pixels):
        super().__init__()
        self._module = module
        self._cache_dir = cache_dir
        self._feature_dim = feature_dim
        self._max_pixels = max_pixels
        self._computed = beam.metrics.Metrics.counter(_METRICS_NAMESPACE, _COMPUTED)
        self._undecodable = beam.metrics.Metrics.counter(_METRICS_NAMESPACE, _UNDECODABLE)

    def setup(self):
        if not os.path.isdir(self._cache_dir):
            raise UserError(f"The bottleneck cache folder {self._cache_dir!r} does not exist on this "
                            "worker; pass a --bottleneck_dir on a filesystem every worker mounts.")
        layer = load_module_on_worker(self._module)
        self._extract = bottlenecks.pixel_forward(layer)
        self._progress = _WorkerProgress()

    def start_bundle(self):
        self._writer = BottleneckCache(self._cache_dir).writer(self._feature_dim)

    def process(self, batch):
        keys, pixels = [], []
        for path_bytes, content_key in batch:
            path = os.fsdecode(path_bytes)
            try:
                pixels.append(preprocess.read_for_module(path, self._module.image_size,
                                                         self._max_pixels))
                keys.append(content_key)
            except images.ImageReadError as error:
                logging.warning("Skipping %s: %s", dataset.display_path(path), error)
                self._undecodable.inc()
        if pixels:
            for key, vector in zip(keys, self._extract(np.stack(pixels)).numpy()):
                self._writer.add(key, vector)
            self._computed.inc(len(keys))
            self._progress.update(len(keys))
        return []

    def finish_bundle(self):
        self._writer.flush()


def load_module_on_worker(module):
    """The module's Keras layer, from the launcher's SavedModel folder if this worker sees it.

    Otherwise (a remote worker) the handle is resolved again here, and must name the very same
    network: vectors of another one would poison the shared cache.
    """
    if not os.path.isdir(module.saved_model_dir):
        resolved = modules.resolve_module(module.handle, module.image_size)
        if resolved.identity != module.identity:
            raise UserError(f"Module {module.handle!r} resolves to {resolved.identity!r} on this "
                            f"worker but to {module.identity!r} on the launcher; make the same "
                            "module reachable at the same path or handle on every worker.")
        module = resolved
    return modules.load_feature_extractor(module)


class _WorkerProgress:
    """Logs how many vectors this worker wrote, at most every _PROGRESS_INTERVAL seconds.

    A worker does not know its share of the job, so it reports a count and a rate, no total.
    """

    def __init__(self):
        self._start = self._last = time.monotonic()
        self._done = 0

    def update(self, count):
        self._done += count
        now = time.monotonic()
        if now - self._last >= _PROGRESS_INTERVAL:
            self._last = now
            logging.info("Beam worker: %d bottlenecks computed, %.1f images/s.", self._done,
                         self._done / max(now - self._start, 1e-9))
