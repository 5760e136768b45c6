"""--bottleneck_precision / label_image --precision: bfloat16 forward passes on CPUs built for it."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import fast_config, parse_retrain_flags
from retrain import pipeline
from retrain.cli import label_image_command
from retrain.data import dataset
from retrain.errors import UserError
from retrain.features import bottleneck_cache
from retrain.features import bottlenecks
from retrain.features import modules
from retrain.predict import label_image
from retrain.runtime import precision

needs_bfloat16_cpu = pytest.mark.skipif(
    not precision.cpu_flags() & {"avx512_bf16", "amx_bf16"},
    reason="this CPU has neither AVX512_BF16 nor AMX")

_OPTION = "auto_mixed_precision_onednn_bfloat16"


def _write_cpuinfo(path, flags):
    path.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\n"
                    f"processor\t: 1\nflags\t\t: {flags}\n")
    return str(path)


@pytest.fixture
def fake_machine(monkeypatch):
    """set(cpu_flags, gpu=False): the CPU feature flags and GPU that precision.check sees for
    the test, whatever this machine has (starts as a CPU without bfloat16 and no GPU)."""
    real_devices = tf.config.list_physical_devices

    def set_machine(cpu_flags, gpu=False):
        monkeypatch.setattr(precision, "cpu_flags", lambda *args: frozenset(cpu_flags.split()))
        fake_gpus = [tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")] if gpu else []
        monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: (
            fake_gpus if kind == "GPU" else real_devices(kind)))

    set_machine("fpu sse2 avx2")
    return set_machine


def _rewrite_is_on():
    return tf.config.optimizer.get_experimental_options().get(_OPTION, False)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = _write_cpuinfo(tmp_path / "cpuinfo", "fpu sse2 avx512f avx512_bf16")
    assert precision.cpu_flags(cpuinfo) == {"fpu", "sse2", "avx512f", "avx512_bf16"}
    assert precision.cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_float32_runs_anywhere_and_unknown_names_are_refused(tmp_path):
    precision.check("float32", "--bottleneck_precision", str(tmp_path / "missing"))
    with pytest.raises(UserError, match=r"--precision='float16' is not one of float32, bfloat16"):
        precision.check("float16", "--precision")


@pytest.mark.parametrize("flags", ["fpu sse2 avx2 avx512f", "fpu sse2 avx512_bf16",
                                   "fpu amx_bf16 amx_tile"])
def test_bfloat16_runs_only_on_a_cpu_with_avx512_bf16_or_amx(tmp_path, flags, monkeypatch):
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])  # No GPU.
    cpuinfo = _write_cpuinfo(tmp_path / "cpuinfo", flags)
    if "bf16" in flags:
        precision.check("bfloat16", "--bottleneck_precision", cpuinfo)
        return
    with pytest.raises(UserError) as error:
        precision.check("bfloat16", "--bottleneck_precision", cpuinfo)
    # It names the value, why, and the fix.
    assert "--bottleneck_precision=bfloat16 needs a CPU with AVX512_BF16 or AMX" in str(error.value)
    assert "Leave it at float32" in str(error.value)


def test_the_bfloat16_rewrite_is_on_only_inside_the_block():
    assert not _rewrite_is_on()
    with precision.forward_in("float32"):
        assert not _rewrite_is_on()
    with precision.forward_in("bfloat16"):
        assert _rewrite_is_on()
    assert not _rewrite_is_on()
    with pytest.raises(KeyboardInterrupt):
        with precision.forward_in("bfloat16"):
            raise KeyboardInterrupt
    assert not _rewrite_is_on()


def test_the_flag_reaches_the_config():
    assert parse_retrain_flags([]).bottleneck_precision == "float32"
    assert parse_retrain_flags(["--bottleneck_precision=bfloat16"]).bottleneck_precision == "bfloat16"


def test_bfloat16_on_a_cpu_without_it_fails_before_anything_is_written(tmp_path, tiny_module,
                                                                       colour_images, fake_machine):
    fake_machine("avx2")
    with pytest.raises(UserError, match="--bottleneck_precision=bfloat16 needs a CPU"):
        pipeline.run(fast_config(colour_images, tiny_module, tmp_path / "out",
                                 bottleneck_precision="bfloat16"))
    assert not os.path.exists(tmp_path / "out")


def test_label_image_precision_is_for_the_saved_model_only(fake_machine):
    fake_machine("fpu avx512f avx512_bf16")
    label_image_command.check_precision("float32", "model.tflite")
    label_image_command.check_precision("bfloat16", None)
    with pytest.raises(UserError, match="--precision=bfloat16 applies to the SavedModel"):
        label_image_command.check_precision("bfloat16", "model.tflite")


@pytest.mark.parametrize("tflite_model", [None, "model.tflite"])
def test_label_image_precision_needs_a_bfloat16_cpu_first(fake_machine, tflite_model):
    fake_machine("fpu avx2 avx512f")
    label_image_command.check_precision("float32", tflite_model)
    with pytest.raises(UserError, match=r"--precision=bfloat16 needs a CPU with AVX512_BF16 or "
                                        r"AMX \(none of amx_bf16, avx512_bf16 in"):
        label_image_command.check_precision("bfloat16", tflite_model)


def test_bfloat16_is_refused_on_a_machine_that_computes_on_its_gpu(fake_machine):
    fake_machine("fpu avx512_bf16 amx_bf16", gpu=True)
    with pytest.raises(UserError, match=r"--precision=bfloat16 speeds up CPUs only, and this "
                                        r"machine computes on its GPU; leave it at float32"):
        precision.check("bfloat16", "--precision")


@needs_bfloat16_cpu
def test_bfloat16_bottlenecks_are_close_cached_apart_and_leave_float32_exact(
        tmp_path, tiny_module, colour_images):
    images = dataset.find_images(colour_images).images
    module = modules.resolve_module(tiny_module)
    cache = str(tmp_path / "cache")

    exact = bottlenecks.get_bottlenecks(images, module, cache, 8, 10**8)
    rounded = bottlenecks.get_bottlenecks(images, module, cache, 8, 10**8, precision="bfloat16")
    assert not _rewrite_is_on()
    # Its own cache: all 36 computed, none taken from the float32 ones.
    assert rounded.computed == len(images) == 36
    assert sorted(os.listdir(cache)) == sorted(
        os.path.basename(bottleneck_cache.module_cache_dir(cache, module, name))
        for name in ("float32", "bfloat16"))
    with open(os.path.join(bottleneck_cache.module_cache_dir(cache, module, "bfloat16"),
                           "module.json"), encoding="utf-8") as description:
        assert json.load(description)["precision"] == "bfloat16"
    # The module's matrix product ran in bfloat16 (8 bits of mantissa): close, not equal.
    assert not np.array_equal(rounded.features, exact.features)
    np.testing.assert_allclose(rounded.features, exact.features, rtol=2e-2, atol=2e-2)

    # Afterwards float32 is float32 again: a fresh cache gets the very same vectors.
    again = bottlenecks.get_bottlenecks(images, module, str(tmp_path / "other"), 8, 10**8)
    assert again.computed == 36
    np.testing.assert_array_equal(again.features, exact.features)
    # And each precision reads its own cache back.
    cached = bottlenecks.get_bottlenecks(images, module, cache, 8, 10**8, precision="bfloat16")
    assert cached.computed == 0
    np.testing.assert_array_equal(cached.features, rounded.features)


@needs_bfloat16_cpu
def test_a_bfloat16_run_trains_and_says_so(tmp_path, tiny_module, colour_images):
    config = fast_config(colour_images, tiny_module, tmp_path / "out",
                         bottleneck_precision="bfloat16")
    result = pipeline.run(config)
    assert result.test.top1_accuracy >= 0.99
    with open(tmp_path / "out" / "metrics.json", encoding="utf-8") as metrics:
        assert json.load(metrics)["bottleneck_precision"] == "bfloat16"
    assert not _rewrite_is_on()

    # label_image in bfloat16 gives the float32 top label, with scores close to its own.
    classifier = label_image.load_classifier(str(tmp_path / "out" / "saved_model"))
    paths = label_image.find_image_files(colour_images)
    exact = list(label_image.classify_files(classifier, paths, 8))
    with precision.forward_in("bfloat16"):
        rounded = list(label_image.classify_files(classifier, paths, 8))
    for one, other in zip(exact, rounded):
        assert np.argmax(one.probabilities) == np.argmax(other.probabilities)
        np.testing.assert_allclose(one.probabilities, other.probabilities, atol=3e-2)
