"""Writes a tiny image-folder dataset for the Docker end-to-end test, with the standard library only.

    python3 make_images.py FOLDER [PER_CLASS]

FOLDER/{red,green,blue}/COLOUR_NNN.png: 40x30 solid-colour PNGs with a little noise, so the
host needs neither Pillow nor numpy (the check runs before anything is installed).
"""

import os
import random
import struct
import sys
import zlib

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
WIDTH, HEIGHT = 40, 30


def png_bytes(rows):
    """An 8-bit RGB PNG of rows: a list of bytes objects, 3 bytes per pixel."""
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", len(rows[0]) // 3, len(rows), 8, 2, 0, 0, 0)
    raw = b"".join(b"\x00" + row for row in rows)  # filter type 0 on every row
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def noisy_rows(colour, rng):
    def channel(value):
        return max(0, min(255, value + rng.randint(-12, 12)))
    return [bytes(channel(value) for _ in range(WIDTH) for value in colour) for _ in range(HEIGHT)]


def main(folder, per_class=12):
    rng = random.Random(0)  # fixed, so every run trains on the same pictures
    for label, colour in COLOURS.items():
        os.makedirs(os.path.join(folder, label), exist_ok=True)
        for index in range(per_class):
            path = os.path.join(folder, label, f"{label}_{index:03d}.png")
            with open(path, "wb") as image_file:
                image_file.write(png_bytes(noisy_rows(colour, rng)))


if __name__ == "__main__":
    main(sys.argv[1], *(int(arg) for arg in sys.argv[2:3]))
