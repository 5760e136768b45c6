"""Reading image files: recognise them by content, decode them safely, make them RGB, and
resize them for the module (read_for_module). No TensorFlow here: the TensorFlow-free
label_image reads images through this module exactly as training does.

Pillow does the decoding because it handles what real folders contain and TensorFlow's
decoders do not: EXIF orientation, CMYK JPEGs, 16-bit PNGs, palette transparency.
"""

import io
import struct

import numpy as np
from PIL import Image, ImageOps

# What each supported format starts with. Recognising images by content (not by extension)
# means a PNG named .jpg is read, and a text file named .jpg is skipped.
_MAGIC_PREFIXES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)
SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")

# Bytes to read to recognise a format (WebP needs 12: "RIFF" <size> "WEBP").
SNIFF_BYTES = 12

_ORIENTATION_TAG = 0x0112  # EXIF

# 100 megapixels: far above any camera photo's needs for a 224-pixel network, and small
# enough (300 MB as RGB) that a decompression bomb is refused before it exhausts memory.
DEFAULT_MAX_PIXELS = 100_000_000

# Malformed files make Pillow's format plugins raise a variety of exceptions, not only
# OSError; all of them mean "this file is not a usable image".
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    struct.error,
    Image.DecompressionBombError,
)


class ImageReadError(Exception):
    """The bytes are not an image this tool can use; the message says why."""


def sniff_format(header):
    """Returns the image format name ("JPEG", "PNG", ...) for the first bytes of a file, or None."""
    for prefix, name in _MAGIC_PREFIXES:
        if header.startswith(prefix):
            return name
    if len(header) >= 12 and header[:4] == b"RIFF" and header[8:12] == b"WEBP":
        return "WEBP"
    return None


def decode_image(data, max_pixels=DEFAULT_MAX_PIXELS, draft_size=None):
    """Decodes encoded image bytes to an RGB array the right way up.

    Args:
      data: the file's bytes (JPEG, PNG, GIF (first frame), BMP or WebP).
      max_pixels: images with more pixels than this are refused without decoding them.
      draft_size: None, or (height, width) the image will be shrunk to next: a JPEG at least
        twice as large in both directions is then decoded at 1/2, 1/4 or 1/8 of its size
        (libjpeg's DCT scaling, many times faster), never below draft_size.

    Returns:
      uint8 array [height, width, 3].

    Raises:
      ImageReadError: the bytes are not a supported, intact image, or it is too large.
    """
    return np.asarray(decode_rgb_image(data, max_pixels, draft_size), dtype=np.uint8)


def decode_rgb_image(data, max_pixels=DEFAULT_MAX_PIXELS, draft_size=None):
    """decode_image's work, returning a decoded Pillow image in mode "RGB" instead of an array.

    For callers that resize with Pillow next: the array round trip would copy the full-size
    image twice more, a sixth of the cost of reading a small photo.
    """
    if sniff_format(data[:SNIFF_BYTES]) is None:
        raise ImageReadError("not a JPEG, PNG, GIF, BMP or WebP image")
    try:
        with Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS) as image:
            _check_pixel_count(image, max_pixels)
            image.seek(0)  # The first frame of an animation.
            if draft_size is not None and image.format == "JPEG":
                _draft(image, draft_size)
            # In place: without an orientation tag this is a no-op instead of a copy.
            ImageOps.exif_transpose(image, in_place=True)
            return _to_rgb_image(image)
    except _DECODE_ERRORS as error:
        raise ImageReadError(f"cannot decode: {error}") from error


def read_image_file(path, max_pixels=DEFAULT_MAX_PIXELS, draft_size=None):
    """Reads and decodes one image file; see decode_image. I/O errors become ImageReadError."""
    return np.asarray(read_rgb_image(path, max_pixels, draft_size), dtype=np.uint8)


def read_rgb_image(path, max_pixels=DEFAULT_MAX_PIXELS, draft_size=None):
    """read_image_file's work, returning a Pillow image in mode "RGB" (see decode_rgb_image)."""
    try:
        with open(path, "rb") as image_file:
            data = image_file.read()
    except OSError as error:
        raise ImageReadError(f"cannot read: {error.strerror or error}") from error
    return decode_rgb_image(data, max_pixels, draft_size)


def _check_pixel_count(image, max_pixels):
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageReadError(f"invalid size {width}x{height}")
    if width * height > max_pixels:
        raise ImageReadError(
            f"{width}x{height} pixels is more than the limit of {max_pixels} "
            "(a decompression bomb, or a photo to shrink first)")


def _draft(jpeg_image, size):
    """Asks libjpeg to decode at the smallest 1/1, 1/2, 1/4 or 1/8 scale still >= size."""
    height, width = size
    # EXIF orientations 5 to 8 turn the image by 90 degrees after decoding.
    if jpeg_image.getexif().get(_ORIENTATION_TAG, 1) in (5, 6, 7, 8):
        height, width = width, height
    jpeg_image.draft(None, (width, height))


def _to_rgb_image(image):
    """Converts any Pillow mode to a decoded image in mode "RGB"."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_high_bit_depth_to_rgb(image))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return Image.fromarray(_flatten_alpha_on_white(image.convert("RGBA")))
    if image.mode == "RGB":
        # convert("RGB") would copy it. load() is a no-op when exif_transpose has decoded
        # the image already (it does in today's Pillow); it keeps decoding errors in the try.
        image.load()
        return image
    return image.convert("RGB")


def _high_bit_depth_to_rgb(image):
    # Pillow's convert("L") clips 16-bit values at 255 instead of scaling them, which turns
    # most 16-bit photos white; scale the full 16-bit range down instead.
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        values = np.clip(values, 0.0, 255.0)
    else:
        values = np.clip(values, 0, 65535) / 257.0
    grey = np.round(values).astype(np.uint8)
    return np.repeat(grey[..., np.newaxis], 3, axis=-1)


def _flatten_alpha_on_white(rgba_image):
    # Transparent areas become white, as most viewers show them.
    rgba = np.asarray(rgba_image, dtype=np.float32)
    alpha = rgba[..., 3:4] / 255.0
    rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
    return np.round(rgb).astype(np.uint8)


def resize_pixels(pixels, image_size):
    """Resizes decoded pixels to the module's input with Pillow's antialiased bilinear filter.

    The same triangle filter as preprocess.resize_for_module's, computed on 8-bit pixels: about three
    times less work, which matters because the resize shares the CPU with the network.
    The result differs from resize_for_module's by at most 2/255 (rounding to 8 bits twice).

    Args:
      pixels: uint8 array [height, width, 3] (any size).
      image_size: (height, width) the module expects.

    Returns:
      uint8 array [image_size[0], image_size[1], 3].
    """
    if pixels.shape[:2] == tuple(image_size):
        return pixels
    return np.asarray(_resized(Image.fromarray(pixels), image_size))


def _resized(rgb_image, image_size):
    """resize_pixels' filter on a Pillow image; the image itself when it has the size already."""
    height, width = image_size
    if rgb_image.size == (width, height):
        return rgb_image
    return rgb_image.resize((width, height), Image.BILINEAR)


def read_for_module(path, image_size, max_pixels):
    """Reads one image file and resizes it for the module: what training (preprocess's
    pixel_batches and image_batches) and the TensorFlow-free label_image read.

    A JPEG twice the input size or larger is decoded at a fraction of its size first
    (decode_image's draft_size), which makes camera photos many times faster to read.

    Returns:
      uint8 array [image_size[0], image_size[1], 3].

    Raises:
      ImageReadError: the file is not a usable image.
    """
    # Decoded straight into Pillow's resize: an array in between would copy the full-size
    # image twice more.
    image = read_rgb_image(path, max_pixels, draft_size=image_size)
    return np.asarray(_resized(image, image_size))


def as_unit_float(pixels):
    """uint8 pixels (array, any shape) -> float32 array in [0, 1], without TensorFlow.

    Bit for bit what preprocess.as_unit_float (tf.image.convert_image_dtype) gives: a float32
    multiply by float32(1/255), so the TensorFlow-free label_image feeds a model exactly the
    numbers the TensorFlow path does.
    """
    pixels = np.asarray(pixels)
    if pixels.dtype == np.float32:
        return pixels
    return pixels.astype(np.float32) * np.float32(1.0 / 255)
