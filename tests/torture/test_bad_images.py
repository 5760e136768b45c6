"""Torture: messy image files are read correctly, or skipped with their path named and counted."""

import os
import subprocess
import sys

import numpy as np
import pytest

from retrain.data import images
from retrain.data import preprocess
import torture_images as make

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def colour_of(array):
    """The mean RGB of a decoded image, as ints."""
    return tuple(int(round(value)) for value in array.reshape(-1, 3).mean(axis=0))


def close_to(actual, expected, tolerance=12):
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected))


# (case, bytes, check on the decoded uint8 [h, w, 3] array)
READABLE_CASES = [
    ("png named .jpg", lambda: make.encode(make.solid(make.RED), "PNG"),
     lambda array: colour_of(array) == make.RED),
    ("webp", lambda: make.encode(make.solid(make.RED), "WEBP", lossless=True),
     lambda array: colour_of(array) == make.RED),
    ("bmp", lambda: make.encode(make.solid(make.RED), "BMP"),
     lambda array: colour_of(array) == make.RED),
    ("animated gif: first frame", make.animated_gif,
     lambda array: close_to(colour_of(array), make.RED, 4)),
    ("cmyk jpeg", make.cmyk_jpeg,
     lambda array: close_to(colour_of(array), (0, 255, 255))),
    ("16-bit grey png scaled, not clipped", make.grey16_png,
     lambda array: close_to(colour_of(array), (128, 128, 128), 1)),
    ("48-bit rgb png", make.rgb48_png,
     lambda array: close_to(colour_of(array), (255, 0, 128), 1)),
    ("greyscale jpeg", lambda: make.encode(make.solid(90, mode="L"), "JPEG"),
     lambda array: close_to(colour_of(array), (90, 90, 90), 2)),
    ("grey + alpha png", lambda: make.encode(make.solid((90, 255), mode="LA"), "PNG"),
     lambda array: colour_of(array) == (90, 90, 90)),
    ("palette png with transparency", make.palette_png_with_transparency,
     lambda array: colour_of(array) == (255, 255, 255)),
    ("rgba png with transparency", make.transparent_rgba_png,
     lambda array: colour_of(array[:, :20]) == make.RED and colour_of(array[:, 20:]) == (255,) * 3),
    ("exif-rotated jpeg, the right way up", make.exif_rotated_jpeg,
     lambda array: (array.shape[:2] == (40, 20) and close_to(colour_of(array[:, 12:]), make.RED)
                    and close_to(colour_of(array[:, :8]), make.BLUE))),
    ("1x1 png", lambda: make.encode(make.solid(make.RED, size=(1, 1)), "PNG"),
     lambda array: array.shape == (1, 1, 3)),
]


@pytest.mark.parametrize("case, data, check", READABLE_CASES, ids=[c[0] for c in READABLE_CASES])
def test_odd_but_valid_images_decode_correctly(case, data, check):
    array = images.decode_image(data())
    assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3, case
    assert check(array), f"{case}: got mean colour {colour_of(array)}, shape {array.shape}"


UNREADABLE_CASES = [
    ("truncated jpeg", make.truncated_jpeg, "cannot decode"),
    ("zero bytes", lambda: b"", "not a JPEG"),
    ("text named .jpg", lambda: b"hello, I am not a photo\n", "not a JPEG"),
    ("tiff (unsupported)", lambda: make.encode(make.solid(), "TIFF"), "not a JPEG"),
    ("png header only", lambda: make.encode(make.solid(), "PNG")[:40], "cannot decode"),
]


@pytest.mark.parametrize("case, data, reason", UNREADABLE_CASES, ids=[c[0] for c in UNREADABLE_CASES])
def test_broken_images_raise_image_read_error(case, data, reason):
    with pytest.raises(images.ImageReadError, match=reason):
        images.decode_image(data())


@pytest.mark.parametrize("case, data, check", READABLE_CASES, ids=[c[0] for c in READABLE_CASES])
def test_read_for_module_equals_decoding_then_resizing_the_array(case, data, check, tmp_path):
    """read_for_module skips the full-size array; its pixels must not change for that."""
    path = make.write_bytes(str(tmp_path / "image"), data())
    for size in ((16, 12), (40, 30), (224, 224)):
        expected = preprocess.resize_pixels(images.read_image_file(path, draft_size=size), size)
        actual = preprocess.read_for_module(path, size, images.DEFAULT_MAX_PIXELS)
        assert actual.dtype == np.uint8 and actual.shape == (*size, 3), case
        np.testing.assert_array_equal(actual, expected, err_msg=case)


@pytest.mark.parametrize("case, data, reason", UNREADABLE_CASES, ids=[c[0] for c in UNREADABLE_CASES])
def test_read_for_module_raises_image_read_error_for_broken_images(case, data, reason, tmp_path):
    path = make.write_bytes(str(tmp_path / "image"), data())
    with pytest.raises(images.ImageReadError, match=reason):
        preprocess.read_for_module(path, (16, 16), images.DEFAULT_MAX_PIXELS)


def test_image_over_the_pixel_limit_is_refused_before_decoding():
    # 110 megapixels: over retrain's limit (100 MP) but under Pillow's own bomb limit, so it
    # is retrain's check that must refuse it.
    with pytest.raises(images.ImageReadError, match="more than the limit"):
        images.decode_image(make.png_bomb(11_000, 10_000))


def test_huge_photo_under_the_limit_is_read():
    array = images.decode_image(make.encode(make.solid(make.RED, size=(6000, 4000)), "JPEG"))
    assert array.shape == (4000, 6000, 3)


def test_lower_pixel_limit_is_honoured():
    with pytest.raises(images.ImageReadError, match="limit of 100"):
        images.decode_image(make.encode(make.solid(size=(20, 10)), "PNG"), max_pixels=100)


# Decodes each file named on the command line, in a process whose address space is capped.
_DECODE_UNDER_A_MEMORY_CAP = r"""
import resource, sys
from retrain.data import images
cap_mb = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (cap_mb << 20, cap_mb << 20))
for path in sys.argv[2:]:
    try:
        images.read_image_file(path)
        print("decoded", path)
    except images.ImageReadError as error:
        print("refused", path, error)
"""


def test_decompression_bombs_are_refused_without_running_out_of_memory(tmp_path):
    # Decoding either bomb would need 110 MB or 400 MB for the pixels alone (three times that
    # as RGB); under a 400 MB address-space cap only a refusal before decoding can succeed.
    bombs = [make.write_bytes(str(tmp_path / "110mp.png"), make.png_bomb(11_000, 10_000)),
             make.write_bytes(str(tmp_path / "400mp.png"), make.png_bomb(20_000, 20_000))]
    environment = dict(os.environ, PYTHONPATH=REPO, OPENBLAS_NUM_THREADS="1")
    completed = subprocess.run([sys.executable, "-c", _DECODE_UNDER_A_MEMORY_CAP, "400", *bombs],
                               capture_output=True, text=True, env=environment, timeout=60,
                               check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = completed.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("refused") for line in lines), lines
    assert "more than the limit" in lines[0] and "exceeds limit" in lines[1]
