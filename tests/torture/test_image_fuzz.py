"""Torture: random and mutated bytes at the image-reading boundary.

decode_image must either return a valid RGB image or raise ImageReadError ("skipped"):
never another exception, never a hang, never an image over the pixel limit.
"""

import faulthandler

from hypothesis import HealthCheck, given, settings, strategies as st
import numpy as np
import pytest

from retrain.data import images
import torture_images as make

MAX_PIXELS = 1_000_000

SEEDS = [
    make.encode(make.noisy(size=(16, 12)), "JPEG"),
    make.encode(make.noisy(size=(16, 12)), "JPEG", progressive=True),
    make.encode(make.noisy(size=(16, 12)), "PNG"),
    make.encode(make.noisy(size=(16, 12)), "WEBP"),
    make.encode(make.noisy(size=(16, 12)), "BMP"),
    make.animated_gif(),
    make.exif_rotated_jpeg(),
    make.cmyk_jpeg(),
    make.grey16_png(),
    make.rgb48_png(),
    make.palette_png_with_transparency(),
]


@st.composite
def mutated_images(draw):
    """A valid image's bytes with a few bytes overwritten, inserted, deleted or cut off."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        action = draw(st.sampled_from(["set", "insert", "delete", "truncate", "big-number"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if not data:
            break
        if action == "set":
            data[position] = draw(st.integers(0, 255))
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif action == "delete":
            del data[position:position + draw(st.integers(1, 16))]
        elif action == "truncate":
            del data[position:]
        else:
            # Sizes and lengths in headers are the classic crash and memory-blowup triggers.
            data[position:position + 4] = draw(st.sampled_from(
                [b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x00\x00\x00", b"\x00\x01\x00\x00"]))
    return bytes(data)


def random_with_magic():
    """Random bytes that start like a supported format, so they get past sniffing."""
    prefixes = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"GIF87a", b"BM", b"RIFF\0\0\0\0WEBP"]
    return st.tuples(st.sampled_from(prefixes), st.binary(max_size=256)).map(lambda pair: b"".join(pair))


@pytest.fixture(autouse=True)
def fail_on_hang():
    # A decoder stuck in C code cannot be interrupted; dump the stacks and exit rather than
    # hang the suite.
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def check_decodes_or_skips(data):
    try:
        array = images.decode_image(data, max_pixels=MAX_PIXELS)
    except images.ImageReadError:
        return
    assert isinstance(array, np.ndarray) and array.dtype == np.uint8
    assert array.ndim == 3 and array.shape[2] == 3
    assert array.shape[0] >= 1 and array.shape[1] >= 1
    assert array.shape[0] * array.shape[1] <= MAX_PIXELS


@settings(max_examples=400, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_images())
def test_mutated_images_decode_or_are_skipped(data):
    check_decodes_or_skips(data)


@settings(max_examples=200, deadline=2000)
@given(st.one_of(st.binary(max_size=64), random_with_magic()))
def test_random_bytes_decode_or_are_skipped(data):
    check_decodes_or_skips(data)
