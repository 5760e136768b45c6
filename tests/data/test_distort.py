"""The distortions themselves: retrain.py's four, as a pure function of (image, seed)."""

import numpy as np
import pytest

from retrain.data import distort
from retrain.data import distortion_settings
from retrain.data import preprocess
from retrain.data.distortion_settings import Distortions
from retrain.errors import UserError

SIZE = (32, 32)
ALL = Distortions(flip_left_right=True, random_crop=20, random_scale=20, random_brightness=20)


def _image(height=50, width=40, seed=0):
    """uint8 [height, width, 3]: random pixels, so every window and mirror is distinguishable."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _distort(image, distortions, seed, size=SIZE):
    return distort.distort_and_resize(image, size, distortions,
                                      np.asarray(seed, np.int64)).numpy()


def _resized(image, size=SIZE):
    return preprocess.resize_for_module(image, size).numpy()


def test_output_shape_dtype_and_range():
    for seed in ([0, 1], [7, 8], [-5, 123456789]):
        output = _distort(_image(), ALL, seed)
        assert output.shape == (32, 32, 3) and output.dtype == np.float32
        assert output.min() >= 0.0 and output.max() <= 1.0


def test_same_seed_same_output_other_seed_other_output():
    image = _image()
    first = _distort(image, ALL, [3, 4])
    np.testing.assert_array_equal(first, _distort(image, ALL, [3, 4]))
    assert not np.allclose(first, _distort(image, ALL, [3, 6]))


def test_no_distortion_is_the_plain_resize():
    image = _image()
    np.testing.assert_array_equal(_distort(image, Distortions(), [1, 2]), _resized(image))


def test_flip_is_an_exact_mirror_when_the_seed_is_odd():
    image = _image()
    flip = Distortions(flip_left_right=True)
    np.testing.assert_allclose(_distort(image, flip, [5, 2]), _resized(image)[:, ::-1], atol=1e-6)
    np.testing.assert_array_equal(_distort(image, flip, [4, 2]), _resized(image))


def test_brightness_multiplies_by_a_factor_within_the_percentage():
    grey = np.full([20, 20, 3], 100, np.uint8)
    base = 100 / 255
    factors = [float(_distort(grey, Distortions(random_brightness=20), [seed, 1]).mean()) / base
               for seed in range(40)]
    assert all(0.8 - 1e-5 <= factor <= 1.2 + 1e-5 for factor in factors)
    assert min(factors) < 0.9 and max(factors) > 1.1  # It really spreads over the range.


def test_brightness_is_clipped_to_one():
    white = np.full([20, 20, 3], 250, np.uint8)
    outputs = [_distort(white, Distortions(random_brightness=50), [seed, 0]) for seed in range(10)]
    assert max(output.max() for output in outputs) == pytest.approx(1.0)


def _window_offset(output, precrop):
    """(top, left) of the window of precrop that equals output, or None."""
    height, width = output.shape[:2]
    for top in range(precrop.shape[0] - height + 1):
        for left in range(precrop.shape[1] - width + 1):
            if np.allclose(precrop[top:top + height, left:left + width], output, atol=1e-5):
                return top, left
    return None


def test_crop_is_a_window_of_the_image_resized_by_the_margin():
    # random_crop=25 on a 32x32 input: the image is resized to 40x40 and 32x32 is cut out.
    image = _image(60, 60)
    precrop = _resized(image, (40, 40))
    offsets = set()
    for seed in range(12):
        offset = _window_offset(_distort(image, Distortions(random_crop=25), [seed, 9]), precrop)
        assert offset is not None, f"seed {seed}: not a window of the precrop image"
        offsets.add(offset)
    assert len(offsets) > 3  # Windows are drawn at random positions.


def test_scale_enlarges_the_precrop_image_within_the_percentage():
    # random_crop=25, random_scale=20: the precrop side is 40 to ceil(40 * 1.2) = 48 pixels.
    image = _image(60, 60)
    precrops = {side: _resized(image, (side, side)) for side in range(40, 49)}
    sides = set()
    for seed in range(8):
        output = _distort(image, Distortions(random_crop=25, random_scale=20), [seed, 3])
        matching = [side for side, precrop in precrops.items()
                    if _window_offset(output, precrop) is not None]
        assert matching, f"seed {seed}: not a window of any allowed precrop size"
        sides.add(matching[0])
    assert len(sides) > 1


def test_variant_keys_name_content_settings_and_copy():
    content = bytes(range(20))
    keys = {distort.variant_key(content, ALL, copy) for copy in range(4)}
    keys.add(distort.variant_key(bytes(20), ALL, 0))
    keys.add(distort.variant_key(content, Distortions(random_crop=20), 0))
    assert len(keys) == 6 and all(len(key) == 20 for key in keys)
    assert distort.variant_key(content, ALL, 2) == distort.variant_key(content, ALL, 2)


def test_even_copies_are_the_mirrored_ones():
    for content in (bytes(20), bytes(range(20)), b"\xff" * 20):
        for copy in range(6):
            seed = distort.variant_seed(distort.variant_key(content, ALL, copy))
            assert seed.dtype == np.int64 and seed.shape == (2,)
            assert (seed[0] % 2 == 1) == (copy % 2 == 0)


@pytest.mark.parametrize("distortions, copies, message", [
    (Distortions(random_crop=101), 4, r"--random_crop=101 is a percentage from 0 to 100"),
    (Distortions(random_scale=-1), 4, r"--random_scale=-1 is a percentage from 0 to 100"),
    (Distortions(random_brightness=100), 4,
     r"--random_brightness=100 is a percentage from 0 to 99"),
    (Distortions(), 3, r"--augmentation_copies=3 has no distortion to apply; add --random_crop"),
    (Distortions(random_crop=10, flip_left_right=True), 0,
     r"--augmentation_copies=0 makes no distorted variants, so --random_crop=10 "
     r"--flip_left_right would do nothing; pass --augmentation_copies=1 or more"),
    (Distortions(random_crop=10), -2, r"--augmentation_copies=-2 is negative"),
])
def test_settings_that_make_no_sense_are_user_errors(distortions, copies, message):
    with pytest.raises(UserError, match=message):
        distortion_settings.check_settings(distortions, copies)


def test_sensible_settings_pass():
    distortion_settings.check_settings(Distortions(), 0)
    distortion_settings.check_settings(ALL, 1)
    distortion_settings.check_settings(Distortions(random_crop=100, random_scale=100, random_brightness=99), 9)
