"""The fast preprocessing path: Pillow's resize, JPEG draft decoding, and 8-bit batches.

These check what the speed-ups must not change (pixels, shapes, order); how fast they are is
measured by scripts/benchmark.py, not here.
"""

import io
import itertools
import os
import threading
import time
import types

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from retrain.data import images
from retrain.data import preprocess


def _smooth_photo(height, width, seed=0):
    """uint8 [height, width, 3]: a smooth random-colour gradient, like a blurry photo."""
    corners = np.random.default_rng(seed).integers(0, 256, (3, 3, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(corners).resize((width, height), Image.BILINEAR))


def _jpeg_bytes(pixels, **options):
    encoded = io.BytesIO()
    Image.fromarray(pixels).save(encoded, "JPEG", quality=95, **options)
    return encoded.getvalue()


@pytest.mark.parametrize("shape", [(240, 320), (480, 640), (100, 80), (1000, 37), (3, 5)])
def test_pillow_resize_matches_tensorflow_resize_to_one_level(shape):
    rng = np.random.default_rng(1)
    for pixels in (_smooth_photo(*shape), rng.integers(0, 256, (*shape, 3), dtype=np.uint8)):
        fast = preprocess.resize_pixels(pixels, (224, 200))
        reference = preprocess.resize_for_module(tf.constant(pixels), (224, 200)).numpy()
        assert fast.dtype == np.uint8 and fast.shape == (224, 200, 3)
        # The same antialiased triangle filter; Pillow rounds to 8 bits after each direction.
        assert np.abs(fast / 255.0 - reference).max() <= 1.01 / 255


def test_resize_of_an_image_already_at_size_is_the_image():
    pixels = _smooth_photo(32, 48)
    assert preprocess.resize_pixels(pixels, (32, 48)) is pixels


@pytest.mark.parametrize("size, draft, expected", [
    ((800, 1000), (224, 224), (400, 500)),  # 1/2: 1/4 would be 200 high, below 224
    ((2000, 3000), (224, 224), (250, 375)),  # 1/8
    ((447, 447), (224, 224), (447, 447)),  # less than twice the size: decoded whole
    ((800, 1000), (32, 32), (100, 125)),  # never more than 1/8
])
def test_draft_decodes_large_jpegs_at_a_fraction_never_below_the_size(size, draft, expected):
    data = _jpeg_bytes(_smooth_photo(*size))
    assert images.decode_image(data, draft_size=draft).shape == (*expected, 3)
    assert images.decode_image(data).shape == (*size, 3)


def test_draft_of_a_rotated_jpeg_keeps_both_sides_at_least_the_size():
    exif = Image.Exif()
    exif[0x0112] = 6  # Stored 1000 wide x 500 high, shown 500 wide x 1000 high.
    data = _jpeg_bytes(_smooth_photo(500, 1000), exif=exif.tobytes())
    # Shown as 1000 high x 500 wide; the module wants 448 high x 224 wide: 1/2 fits, 1/4 not.
    assert images.decode_image(data, draft_size=(448, 224)).shape == (500, 250, 3)
    assert images.decode_image(data).shape == (1000, 500, 3)


def test_draft_leaves_other_formats_whole(tmp_path):
    path = tmp_path / "large.png"
    Image.fromarray(_smooth_photo(800, 1000)).save(path)
    assert images.read_image_file(str(path), draft_size=(224, 224)).shape == (800, 1000, 3)


def test_drafted_photo_stays_close_to_the_full_decode(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(_jpeg_bytes(_smooth_photo(1200, 1600)))
    fast = preprocess.read_for_module(str(path), (224, 224), images.DEFAULT_MAX_PIXELS) / 255.0
    full = preprocess.resize_for_module(images.read_image_file(str(path)), (224, 224)).numpy()
    assert np.abs(fast - full).mean() < 1.0 / 255
    assert np.abs(fast - full).max() < 6.0 / 255


def _write_images(folder, count):
    paths = []
    for index in range(count):
        path = os.path.join(folder, f"image_{index:02d}" + (".jpg" if index % 2 else ".png"))
        Image.fromarray(_smooth_photo(30 + index, 50 - index, seed=index)).save(path)
        paths.append(path)
    return paths


def test_image_batches_are_read_for_module_in_order_and_skip_bad_files(tmp_path):
    paths = _write_images(str(tmp_path), 11)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    paths.insert(4, str(broken))
    errors = {}
    batches = list(preprocess.image_batches(paths, (24, 20), 5, 10**8, errors))
    indices = np.concatenate([batch[0].numpy() for batch in batches])
    pixels = np.concatenate([batch[1].numpy() for batch in batches])
    ok = np.concatenate([batch[2].numpy() for batch in batches])
    assert [len(batch[0]) for batch in batches] == [5, 5, 2]
    assert indices.tolist() == list(range(12))
    assert ok.tolist() == [index != 4 for index in range(12)]
    assert "cannot decode" in errors[4]
    assert pixels.dtype == np.float32 and pixels.shape == (12, 24, 20, 3)
    for index, path in enumerate(paths):
        if index != 4:
            expected = preprocess.read_for_module(path, (24, 20), 10**8)
            np.testing.assert_array_equal(pixels[index],
                                          tf.image.convert_image_dtype(expected, tf.float32))


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("batch_size", [1, 5, 12, 40])
def test_pixel_batches_are_read_for_module_in_order_and_skip_bad_files(tmp_path, threads,
                                                                       batch_size):
    """Whatever the threads and however batches split into reader chunks (8 images), each
    batch holds consecutive images exactly as read_for_module reads them."""
    paths = _write_images(str(tmp_path), 21)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    paths.insert(9, str(broken))
    batches = list(preprocess.pixel_batches(paths, (24, 20), batch_size, 10**8, threads))
    assert [len(batch.indices) for batch in batches[:-1]] == [batch_size] * (len(batches) - 1)
    assert np.concatenate([batch.indices for batch in batches]).tolist() == list(range(22))
    pixels = np.concatenate([batch.pixels for batch in batches])
    errors = sum((batch.errors for batch in batches), [])
    assert pixels.dtype == np.uint8 and pixels.shape == (22, 24, 20, 3)
    assert np.concatenate([batch.ok for batch in batches]).tolist() == [i != 9 for i in range(22)]
    assert "cannot decode" in errors[9] and errors.count(None) == 21
    assert not pixels[9].any()
    for index, path in enumerate(paths):
        if index != 9:
            np.testing.assert_array_equal(pixels[index],
                                          preprocess.read_for_module(path, (24, 20), 10**8))


def test_pixel_batches_stop_reading_when_the_consumer_stops(tmp_path, monkeypatch):
    """A consumer that stops early (Ctrl-C, an error) leaves no reader reading on: at most the
    images read ahead and the chunks being read were read."""
    paths = _write_images(str(tmp_path), 4) * 50
    reads = []
    real_read = preprocess.read_for_module
    monkeypatch.setattr(preprocess, "read_for_module",
                        lambda *args: reads.append(1) or real_read(*args))
    batches = preprocess.pixel_batches(paths, (8, 8), 8, 10**8, threads=2)
    next(batches)
    batches.close()  # Waits for the reader threads.
    read_at_close = len(reads)
    assert 8 <= read_at_close <= 8 + preprocess._READ_AHEAD_IMAGES + 2 * 8 < len(paths)
    time.sleep(0.2)
    assert len(reads) == read_at_close


_needs_idle_priority = pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"),
                                          reason="idle CPU priority is Linux's")


@_needs_idle_priority
def test_low_priority_readers_run_at_idle_priority_and_the_consumer_does_not(tmp_path,
                                                                            monkeypatch):
    paths = _write_images(str(tmp_path), 6)
    policies = []
    real_read = preprocess.read_for_module
    monkeypatch.setattr(preprocess, "read_for_module",
                        lambda *args: policies.append(os.sched_getscheduler(0)) or real_read(*args))
    assert len(list(preprocess.pixel_batches(paths, (8, 8), 2, 10**8, 2, low_priority=True))) == 3
    assert policies == [os.SCHED_IDLE] * 6
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
    policies.clear()
    list(preprocess.pixel_batches(paths, (8, 8), 2, 10**8, 2, low_priority=False))
    assert policies == [os.SCHED_OTHER] * 6


@_needs_idle_priority
def test_starved_idle_readers_give_way_to_normal_priority_reading(tmp_path, monkeypatch, caplog):
    """Other programs busy on every core leave idle-priority readers no CPU: simulated by
    idle readers that do not run until the test ends. The batches still come, complete and
    in order, and a warning says why reading goes on at normal priority."""
    caplog.set_level("WARNING", logger="absl")
    paths = _write_images(str(tmp_path), 21)
    monkeypatch.setattr(preprocess, "_STARVED_READER_SECONDS", 0.2)
    test_over = threading.Event()
    real_read = preprocess.read_for_module

    def read_unless_starved(*args):
        if os.sched_getscheduler(0) == os.SCHED_IDLE:
            test_over.wait()
        return real_read(*args)

    monkeypatch.setattr(preprocess, "read_for_module", read_unless_starved)
    try:
        batches = list(preprocess.pixel_batches(paths, (24, 20), 4, 10**8, 2, low_priority=True))
    finally:
        test_over.set()
    assert np.concatenate([batch.indices for batch in batches]).tolist() == list(range(21))
    pixels = np.concatenate([batch.pixels for batch in batches])
    for index, path in enumerate(paths):
        np.testing.assert_array_equal(pixels[index], real_read(path, (24, 20), 10**8))
    assert sum("got no CPU" in record.getMessage() for record in caplog.records) == 1


def test_pixel_batches_of_no_paths_are_none(tmp_path):
    assert not list(preprocess.pixel_batches([], (8, 8), 4, 10**8))


def test_training_pixels_match_the_bytes_signature_for_png(tmp_path):
    """The exported serving_bytes path (TensorFlow) and training (Pillow) agree to one level."""
    paths = [path for path in _write_images(str(tmp_path), 6) if path.endswith(".png")]
    _, batch, _ = next(iter(preprocess.image_batches(paths, (32, 32), 8, 10**8, {})))
    for path, training in zip(paths, batch.numpy()):
        with open(path, "rb") as image_file:
            serving = preprocess.decode_and_resize(tf.constant(image_file.read()), (32, 32))
        assert np.abs(training - serving.numpy()).max() <= 1.01 / 255


def test_distorted_batches_still_come_from_the_full_image(tmp_path):
    from retrain.data import distort  # pylint: disable=import-outside-toplevel
    from retrain.data import distortion_settings
    paths = _write_images(str(tmp_path), 3)
    seeds = np.arange(6, dtype=np.int64).reshape(3, 2)
    distortions = distortion_settings.Distortions(flip_left_right=True, random_crop=20)
    first = [batch[1].numpy() for batch in preprocess.image_batches(
        paths, (16, 16), 2, 10**8, {}, distort.variant_transform((16, 16), distortions, seeds, 3))]
    again = [batch[1].numpy() for batch in preprocess.image_batches(
        paths, (16, 16), 2, 10**8, {}, distort.variant_transform((16, 16), distortions, seeds, 3))]
    assert [batch.shape for batch in first] == [(2, 16, 16, 3), (1, 16, 16, 3)]
    for one, other in zip(first, again):
        np.testing.assert_array_equal(one, other)


def test_a_reader_slow_on_the_cpu_is_waited_for_not_taken_over(tmp_path, monkeypatch, caplog):
    """A reader busy longer than the starvation check (a huge image) is working, not starved:
    no warning, and no image read twice. The process's CPU clock is simulated (a reader busy
    on a core advances it while the network waits), so the outcome does not depend on how
    busy the machine is: with the real clock, other programs could starve the test for real."""
    caplog.set_level("WARNING", logger="absl")
    paths = _write_images(str(tmp_path), 4)
    monkeypatch.setattr(preprocess, "_STARVED_READER_SECONDS", 0.1)
    monkeypatch.setattr(preprocess, "_lower_thread_priority", lambda: None)
    cpu_seconds = itertools.count(step=1.0)
    monkeypatch.setattr(preprocess, "time", types.SimpleNamespace(
        process_time=lambda: next(cpu_seconds)))
    reads = []
    real_read = preprocess.read_for_module

    def read_slowly(*args):
        reads.append(args[0])
        time.sleep(0.3)  # Longer than the check: each wait times out at least twice.
        return real_read(*args)

    monkeypatch.setattr(preprocess, "read_for_module", read_slowly)
    batches = list(preprocess.pixel_batches(paths, (8, 8), 2, 10**8, 1, low_priority=True))
    assert np.concatenate([batch.indices for batch in batches]).tolist() == [0, 1, 2, 3]
    assert sorted(reads) == sorted(paths)
    assert not [record for record in caplog.records if "got no CPU" in record.getMessage()]
