"""`retrain bottlenecks`: the Apache Beam pipeline writes the cache retrain would write itself.

Apache Beam is an optional extra that cannot share an environment with requirements.txt
(it caps protobuf and Pillow lower), so the pipeline tests skip without it; scripts/test.sh
runs them in .venv-beam (requirements-beam.txt). The missing-Beam tests run everywhere.
They use Beam's local FnApiRunner: the DirectRunner would try to download a runner binary.
"""

import json
import os
import shutil
import subprocess
import sys

from absl import flags
import numpy as np
import pytest

from retrain.cli import bottlenecks_command
from retrain.config import RetrainConfig
from retrain.errors import UserError
from tests.conftest import fast_config, write_solid_colour_images

_LOCAL_RUNNER = ["--runner=FnApiRunner"]


def _beam_modules():
    """(beam_bottlenecks, bottlenecks, dataset, modules, bottleneck_cache), or skips the test."""
    pytest.importorskip("apache_beam", reason="Apache Beam (the `beam` extra) is not installed; "
                        "scripts/test.sh runs these tests in .venv-beam")
    # pylint: disable=import-outside-toplevel
    from retrain.data import dataset
    from retrain.features import beam_bottlenecks
    from retrain.features import bottleneck_cache
    from retrain.features import bottlenecks
    from retrain.features import modules
    return beam_bottlenecks, bottlenecks, dataset, modules, bottleneck_cache


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Colour images, a copy of one (same content, another name) and a truncated JPEG."""
    folder = write_solid_colour_images(tmp_path_factory.mktemp("beam") / "photos", per_class=8)
    shutil.copy(os.path.join(folder, "red", "red_000.jpg"), os.path.join(folder, "red", "copy.jpg"))
    with open(os.path.join(folder, "blue", "truncated.jpg"), "wb") as corrupt:
        corrupt.write(b"\xff\xd8\xff\xe0" + b"\x00" * 40)  # A JPEG header and nothing usable.
    return folder


@pytest.fixture(scope="module")
def beam_run(photos, tiny_module, tmp_path_factory):
    """(BeamReport, resolved config) of one Beam run into an empty cache."""
    beam_bottlenecks = _beam_modules()[0]
    config = fast_config(photos, tiny_module, tmp_path_factory.mktemp("beam_out")).resolved()
    return beam_bottlenecks.compute_cache(config, _LOCAL_RUNNER), config


def _cache_contents(bottleneck_dir, module):
    """({content key: float32 [D] vector}, module.json as a dict) of a module's cache."""
    cache_lib = _beam_modules()[4]
    cache = cache_lib.BottleneckCache(cache_lib.module_cache_dir(bottleneck_dir, module))
    description = cache.read_description()
    cached = cache.load(description["feature_dim"])
    return dict(zip(cached.keys, cached.vectors)), description


def _shards(cache_dir):
    return sorted(name for name in os.listdir(cache_dir) if name.startswith("shard-"))


def test_beam_writes_the_cache_retrain_writes(beam_run, photos, tiny_module, tmp_path):
    _, bottlenecks, dataset, modules, _ = _beam_modules()
    report, config = beam_run
    module = modules.resolve_module(tiny_module)
    collection = dataset.find_images(photos)
    retrain_dir = str(tmp_path / "retrain_cache")
    own = bottlenecks.get_bottlenecks(collection.images, module, retrain_dir, 8,
                                      config.max_image_pixels)
    assert [os.path.basename(skip.path) for skip in own.failed] == ["truncated.jpg"]
    beam_vectors, beam_description = _cache_contents(config.bottleneck_dir, module)
    own_vectors, own_description = _cache_contents(retrain_dir, module)
    assert beam_description == own_description
    assert sorted(beam_vectors) == sorted(own_vectors) and len(own_vectors) == 24
    for key, vector in own_vectors.items():
        # Same decoding and resize; the forward pass sees other batch neighbours (Beam
        # reshuffles), which may change float rounding in the last bits, nothing more.
        np.testing.assert_allclose(beam_vectors[key], vector, rtol=1e-6, atol=1e-7)


def test_report_counts_images_once_and_the_corrupt_one_as_undecodable(beam_run):
    report, config = beam_run
    # 24 colour images + a copy (same content key) + a truncated JPEG: 25 distinct contents.
    assert (report.images, report.cached_before, report.to_compute) == (25, 0, 25)
    assert (report.computed, report.undecodable, report.missing_after) == (24, 1, 1)
    assert report.cache_dir.startswith(config.bottleneck_dir)
    with open(os.path.join(report.cache_dir, "module.json"), encoding="utf-8") as description:
        assert json.load(description)["feature_dim"] == 6


def test_retrain_trains_from_the_beam_cache_without_computing(beam_run, photos, tiny_module,
                                                              tmp_path):
    from retrain import pipeline  # pylint: disable=import-outside-toplevel
    _, config = beam_run
    result = pipeline.run(fast_config(photos, tiny_module, tmp_path / "out",
                                      bottleneck_dir=config.bottleneck_dir))
    assert result.bottlenecks_computed == 0
    assert "truncated.jpg" in [os.path.basename(skip.path) for skip in result.skipped]
    assert result.test.top1_accuracy >= 0.9


def test_rerun_on_a_full_cache_computes_nothing(beam_run):
    beam_bottlenecks = _beam_modules()[0]
    first, config = beam_run
    shards_before = _shards(first.cache_dir)
    again = beam_bottlenecks.compute_cache(config, _LOCAL_RUNNER)
    # Only the undecodable image is tried again (it may have been fixed); nothing is written.
    assert (again.cached_before, again.to_compute, again.computed) == (24, 1, 0)
    assert _shards(first.cache_dir) == shards_before


def test_relative_image_dir_and_a_full_cache(tiny_module, tmp_path, monkeypatch):
    beam_bottlenecks = _beam_modules()[0]
    monkeypatch.chdir(tmp_path)
    write_solid_colour_images(tmp_path / "photos", per_class=2)
    config = fast_config("photos", tiny_module, "out").resolved()
    first = beam_bottlenecks.compute_cache(config, _LOCAL_RUNNER)
    assert (first.computed, first.missing_after) == (6, 0)
    shards = _shards(first.cache_dir)
    again = beam_bottlenecks.compute_cache(config, _LOCAL_RUNNER)
    assert (again.to_compute, again.computed, again.missing_after) == (0, 0, 0)
    assert _shards(first.cache_dir) == shards


def test_unknown_runner_is_an_error_before_any_work(tmp_path):
    beam_bottlenecks = _beam_modules()[0]
    config = fast_config(tmp_path / "no_such_folder", "unused", tmp_path / "out").resolved()
    with pytest.raises(UserError, match=r"--runner=NoSuchRunner.*pass FnApiRunner"):
        beam_bottlenecks.compute_cache(config, ["--runner=NoSuchRunner"])


def test_unknown_pipeline_option_is_an_error():
    beam_bottlenecks = _beam_modules()[0]
    with pytest.raises(UserError, match=r"--direct_num_workrs=2.*check the spelling"):
        beam_bottlenecks.pipeline_options(["--runner=FnApiRunner", "--direct_num_workrs=2"])
    options = beam_bottlenecks.pipeline_options(["--direct_num_workers=2"])
    assert options.get_all_options()["direct_num_workers"] == 2


def test_worker_error_reaches_the_launcher_as_a_user_error(tiny_module, tmp_path):
    beam_bottlenecks, _, _, modules, _ = _beam_modules()
    import apache_beam as beam  # pylint: disable=import-outside-toplevel
    module = modules.resolve_module(tiny_module)
    # A worker that cannot see the cache folder (not on a shared filesystem) says so.
    with pytest.raises(UserError, match=r"does not exist on this worker.*every worker mounts"):
        with beam.Pipeline(options=beam_bottlenecks.pipeline_options(_LOCAL_RUNNER)) as root:
            beam_bottlenecks.add_compute_transforms(root, [(b"unused.jpg", b"k" * 20)], module,
                                                    str(tmp_path / "absent"), 6, 4, 10**8)


def test_url_bottleneck_dir_is_refused_before_any_work():
    beam_bottlenecks = _beam_modules()[0]
    with pytest.raises(UserError, match=r"gs://bucket/cache.*mount the bucket"):
        beam_bottlenecks.check_local_path("gs://bucket/cache")


def test_command_line_runs_the_pipeline(photos, tiny_module, tmp_path):
    _beam_modules()
    command = [sys.executable, "-m", "retrain", "bottlenecks", f"--image_dir={photos}",
               f"--bottleneck_dir={tmp_path / 'cache'}", f"--tfhub_module={tiny_module}",
               "--bottleneck_batch_size=4", "--direct_num_workers=1"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr
    assert "24 computed by Beam and 1 undecodable" in completed.stderr
    assert "truncated.jpg" in completed.stderr


def test_flags_make_the_config_and_the_rest_go_to_beam():
    flag_values = flags.FlagValues()
    bottlenecks_command.define_flags(flag_values)
    rest = flag_values(["prog", "--image_dir=photos", "--image_size=24", "--direct_num_workers",
                        "2", "--bottleneck_batch_size=4", "--project=p"], known_only=True)
    assert rest == ["prog", "--direct_num_workers", "2", "--project=p"]
    config = bottlenecks_command.config_from_flags(flag_values)
    assert (config.image_dir, config.image_size, config.bottleneck_batch_size) == ("photos", (24, 24), 4)
    # Where `retrain` looks when it is not given --bottleneck_dir either.
    assert config.bottleneck_dir == RetrainConfig().resolved().bottleneck_dir
    assert flag_values["runner"].value == bottlenecks_command.DEFAULT_RUNNER


def test_missing_beam_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "apache_beam", None)  # What an uninstalled package looks like.
    with pytest.raises(UserError, match=r"pip install 'retrain\[beam\]'"):
        bottlenecks_command.check_beam_installed()


def test_missing_beam_exits_2_from_the_command_line(tmp_path):
    hide_beam = ("import sys; sys.modules['apache_beam'] = None; "
                 "sys.argv = ['retrain', 'bottlenecks', '--image_dir', sys.argv[1]]; "
                 "from retrain.cli.retrain_command import run_main; run_main()")
    completed = subprocess.run([sys.executable, "-c", hide_beam, str(tmp_path)],
                               capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        "retrain bottlenecks: error: Apache Beam is not installed; install it with: "
        "pip install 'retrain[beam]'."]
