"""Makers of the messy files that real image folders contain, for the torture tests.

Each function writes one file (or returns its bytes) and says what a correct reader should
see. Nothing here imports TensorFlow, so subprocesses that use it start fast.
"""

import io
import os
import struct
import zlib

import numpy as np
from PIL import Image

RED = (220, 30, 30)
BLUE = (30, 40, 220)


def solid(colour=RED, size=(40, 30), mode="RGB"):
    """A solid-colour Pillow image; size is (width, height)."""
    return Image.new(mode, size, colour)


def encode(image, image_format, **options):
    """The bytes of image saved in image_format ("JPEG", "PNG", ...)."""
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def write_bytes(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as output:
        output.write(data)
    return path


def truncated_jpeg():
    data = encode(noisy(), "JPEG")
    return data[:len(data) // 2]


def noisy(size=(40, 30), seed=0):
    """An RGB image of random pixels (JPEG of it has real entropy-coded data to truncate)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def animated_gif(first=RED, second=BLUE):
    frames = [solid(first), solid(second)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100,
                   loop=0)
    return buffer.getvalue()


def cmyk_jpeg():
    """A CMYK JPEG of pure cyan: reads as RGB (0, 255, 255) give or take JPEG rounding."""
    return encode(Image.new("CMYK", (40, 30), (255, 0, 0, 0)), "JPEG", quality=95)


def grey16_png(value=32768):
    """A 16-bit greyscale PNG of one value; 32768 is mid-grey (about 128 in 8 bits)."""
    pixels = np.full((30, 40), value, dtype=np.uint16)
    return encode(Image.fromarray(pixels), "PNG")  # uint16 -> mode I;16


def rgb48_png(colour16=(65535, 0, 32768), size=(4, 3)):
    """A 16-bit-per-channel RGB PNG, written by hand (Pillow cannot write one)."""
    width, height = size
    row = b"\0" + struct.pack(">HHH", *colour16) * width
    return png_bytes(width, height, bit_depth=16, colour_type=2, raw=row * height)


def png_bytes(width, height, bit_depth, colour_type, raw):
    """A PNG file of the given header and raw (filtered) scanline bytes."""
    def chunk(kind, payload):
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xffffffff))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def png_bomb(width, height):
    """A greyscale PNG of width x height black pixels: a few hundred KB that decode to w*h bytes."""
    compressor = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    data = b"".join(parts)

    def chunk(kind, payload):
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xffffffff))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def palette_png_with_transparency():
    """A palette PNG whose index 0 is fully transparent: reads as white."""
    image = Image.new("P", (40, 30), 0)
    image.putpalette([0, 0, 0] + list(RED) + [0] * (256 * 3 - 6))
    return encode(image, "PNG", transparency=0)


def transparent_rgba_png():
    """Left half opaque red, right half fully transparent: reads as red | white."""
    pixels = np.zeros((30, 40, 4), np.uint8)
    pixels[:, :20] = RED + (255,)
    return encode(Image.fromarray(pixels), "PNG")  # 4 channels -> RGBA


def exif_rotated_jpeg():
    """Stored 40 wide x 20 high, top half red and bottom half blue, with EXIF orientation 6.

    Orientation 6 means "rotate 90 degrees clockwise to display", so the right way up the
    photo is 20 wide x 40 high with red on the right and blue on the left.
    """
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:10] = RED
    pixels[10:] = BLUE
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(Image.fromarray(pixels), "JPEG", exif=exif.tobytes(), quality=95)
