"""Image files in the formats and modes people upload, made by code (no binaries checked in), and datasets
whose classes differ ONLY in what `trainer.images.open_image` makes visible.

Each dataset is built so that a reader without the conversion sees the same thing in every class (identical
stored pixels, an all-white clip, an all-black colour plane): a model can then do no better than chance, so a
high test accuracy proves the conversion, not the model.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

Member = tuple[str, bytes]
SPLIT_SIZES = {"train": 48, "val": 16, "test": 16}  # images per class

# What a camera stores for a scene it tags with each EXIF orientation: the viewer undoes it.
# 6 = "turn 90° clockwise to view", so the camera stored the scene turned counter-clockwise (ROTATE_90).
_STORED_FROM_VIEWED: dict[int, Callable[[Image.Image], Image.Image]] = {
    1: lambda im: im.copy(),
    2: lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    3: lambda im: im.transpose(Image.Transpose.ROTATE_180),
    4: lambda im: im.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
    5: lambda im: im.transpose(Image.Transpose.TRANSPOSE),
    6: lambda im: im.transpose(Image.Transpose.ROTATE_90),
    7: lambda im: im.transpose(Image.Transpose.TRANSVERSE),
    8: lambda im: im.transpose(Image.Transpose.ROTATE_270),
}
# The orientation tag whose viewer rotation turns a stored arrow by this many degrees clockwise.
_ORIENTATION_FOR_TURN = {0: 1, 90: 6, 180: 3, 270: 8}


def encode(img: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def exif_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def as_stored(viewed: Image.Image, orientation: int) -> Image.Image:
    """The pixels a camera writes for `viewed` when it tags the file with `orientation`."""
    return _STORED_FROM_VIEWED[orientation](viewed)


def with_orientation(viewed: Image.Image, orientation: int, fmt: str = "JPEG") -> bytes:
    """A file whose stored pixels are `viewed` turned as a camera would, tagged with `orientation`."""
    params: dict[str, Any] = {"quality": 95} if fmt in {"JPEG", "WEBP", "AVIF", "HEIF"} else {}
    return encode(as_stored(viewed, orientation), fmt, exif=exif_orientation(orientation), **params)


QUADRANT_COLOURS = ((230, 30, 30), (30, 200, 30), (30, 30, 230), (240, 240, 40))


def quadrants(width: int = 24, height: int = 16) -> Image.Image:
    """Red, green / blue, yellow quadrants: every turn and flip of it looks different."""
    img = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(img)
    w, h = width // 2, height // 2
    for colour, (x, y) in zip(QUADRANT_COLOURS, [(0, 0), (w, 0), (0, h), (w, h)], strict=True):
        draw.rectangle([x, y, x + w - 1, y + h - 1], fill=colour)
    return img


def frames_file(colours: Iterable[tuple[int, int, int]], fmt: str, size: int = 8) -> bytes:
    """An animated (GIF, WebP) or multi-page (TIFF) file: one solid frame per colour."""
    frames = [Image.new("RGB", (size, size), colour) for colour in colours]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def gray16(values: np.ndarray) -> Image.Image:
    """A 16-bit greyscale image (mode I;16) of `values`."""
    return Image.fromarray(values.astype(np.uint16))


def noise_jpeg(size: int = 128, seed: int = 0) -> bytes:
    """A JPEG of noise: no long runs of equal bytes, so a cut anywhere lands inside the image data."""
    rng = np.random.default_rng(seed)
    return encode(Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)), "JPEG")


# -- datasets whose classes only a conversion tells apart --------------------------------------------------
def _members(classes: dict[str, Callable[[random.Random], tuple[str, bytes]]], seed: int) -> list[Member]:
    rng = random.Random(seed)
    members = []
    for split, n in SPLIT_SIZES.items():
        for name, make in classes.items():
            for i in range(n):
                extension, data = make(rng)
                members.append((f"{split}/{name}/{i:03d}.{extension}", data))
    return members


def _arrow_up(size: int, rng: random.Random) -> Image.Image:
    """A dark arrow pointing up on a light background, at a random place, length and thickness."""
    background = rng.randint(170, 255)
    img = Image.new("L", (size, size), background)
    draw = ImageDraw.Draw(img)
    ink = rng.randint(0, 80)
    cx = size // 2 + rng.randint(-size // 8, size // 8)
    top = rng.randint(size // 8, size // 4)
    bottom = size - rng.randint(size // 8, size // 4)
    half_head = rng.randint(size // 6, size // 4)
    shaft = rng.randint(2, 3)
    draw.rectangle([cx - shaft // 2, top + half_head, cx + shaft // 2, bottom], fill=ink)
    draw.polygon([(cx, top), (cx - half_head, top + half_head), (cx + half_head, top + half_head)], fill=ink)
    noisy = np.asarray(img, dtype=np.int16) + np.asarray(
        np.random.default_rng(rng.getrandbits(32)).integers(-12, 13, (size, size)), dtype=np.int16
    )
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).convert("RGB")


def exif_arrow_members(size: int = 32, seed: int = 0) -> list[Member]:
    """Classes `up` and `right`: arrows as a person sees them. Each file's stored arrow points up, right,
    down or left at random (the same four in both classes) and only its EXIF orientation (1, 3, 6 or 8)
    says how to turn it: read without EXIF the two classes are the same distribution of pixels."""

    def arrow(viewed_degrees: int) -> Callable[[random.Random], tuple[str, bytes]]:
        def make(rng: random.Random) -> tuple[str, bytes]:
            turn = rng.choice([0, 90, 180, 270])  # how far the viewer turns the stored arrow, clockwise
            viewed = _arrow_up(size, rng).rotate(-viewed_degrees)  # PIL rotates counter-clockwise
            return "jpg", with_orientation(viewed, _ORIENTATION_FOR_TURN[turn])

        return make

    return _members({"up": arrow(0), "right": arrow(90)}, seed)


def gray16_stripe_members(size: int = 32, seed: int = 0) -> list[Member]:
    """Classes `horizontal` and `vertical`: 16-bit PNGs of stripes whose values all lie in a narrow band high
    above 255 (a random base in 20000..60000, a contrast of 300..3000): clipped to 8 bits, every image is
    plain white; stretched by its range, the stripes are plain to see."""

    def stripes(axis: int) -> Callable[[random.Random], tuple[str, bytes]]:
        def make(rng: random.Random) -> tuple[str, bytes]:
            period = rng.randint(4, 8)
            phase = rng.uniform(0, 2 * np.pi)
            wave = np.sin(2 * np.pi * np.arange(size) / period + phase)
            rows = np.tile(wave[:, None], (1, size))  # horizontal stripes: the value changes down the rows
            pattern = rows if axis == 0 else rows.T
            base, contrast = rng.uniform(20000, 60000), rng.uniform(300, 3000)
            noise = np.random.default_rng(rng.getrandbits(32)).normal(0, 0.15, (size, size))
            values = base + contrast * (pattern + noise)
            return "png", encode(gray16(np.clip(values, 0, 65535)), "PNG")

        return make

    return _members({"horizontal": stripes(0), "vertical": stripes(1)}, seed)


def alpha_shape_members(size: int = 32, seed: int = 0) -> list[Member]:
    """Classes `horizontal` and `vertical`: black bars whose outline exists only in the alpha channel (every
    pixel's colour is black), stored as RGBA, LA or palette-with-transparency PNGs at random. Without the
    alpha the images are all black; composited onto white they show a black bar on white."""

    def bar(axis: int) -> Callable[[random.Random], tuple[str, bytes]]:
        def make(rng: random.Random) -> tuple[str, bytes]:
            length, thickness = rng.randint(size // 2, size - 4), rng.randint(3, 6)
            x, y = rng.randint(0, size - length), rng.randint(0, size - thickness)
            w, h = (length, thickness) if axis == 0 else (thickness, length)
            x, y = (x, y) if axis == 0 else (y, x)
            alpha = Image.new("L", (size, size), 0)
            ImageDraw.Draw(alpha).rectangle([x, y, x + w - 1, y + h - 1], fill=255)
            mode = rng.choice(["RGBA", "LA", "P"])
            if mode == "P":  # palette index 0 is black and opaque, index 1 black and transparent
                img = Image.new("P", (size, size), 1)
                img.putpalette([0, 0, 0] * 256)
                img.paste(0, mask=alpha)
                return "png", encode(img, "PNG", transparency=1)
            black = Image.new("L" if mode == "LA" else "RGB", (size, size), 0)
            black.putalpha(alpha)
            return "png", encode(black, "PNG")

        return make

    return _members({"horizontal": bar(0), "vertical": bar(1)}, seed)
