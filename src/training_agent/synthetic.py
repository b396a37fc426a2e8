"""A small generated image dataset (coloured shapes on noise), so the demo needs no download."""

from __future__ import annotations

import io
import random
import zipfile
from pathlib import Path

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "cross")
_TINTS = {
    "circle": (200, 60, 60),
    "square": (60, 170, 60),
    "triangle": (60, 90, 210),
    "cross": (200, 170, 40),
}


def _draw(shape: str, size: int, rng: random.Random) -> Image.Image:
    background = tuple(rng.randint(0, 90) for _ in range(3))
    img = Image.new("RGB", (size, size), background)
    pixels = img.load()
    assert pixels is not None
    for _ in range(size * size // 8):  # speckle noise, so no two images are the same
        x, y = rng.randrange(size), rng.randrange(size)
        pixels[x, y] = tuple(rng.randint(0, 255) for _ in range(3))
    draw = ImageDraw.Draw(img)
    radius = rng.uniform(0.2, 0.4) * size
    cx, cy = rng.uniform(radius, size - radius), rng.uniform(radius, size - radius)
    color = tuple(max(0, min(255, c + rng.randint(-40, 40))) for c in _TINTS[shape])
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    elif shape == "triangle":
        draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=color)
    else:
        width = radius / 2.5
        draw.rectangle((cx - radius, cy - width, cx + radius, cy + width), fill=color)
        draw.rectangle((cx - width, cy - radius, cx + width, cy + radius), fill=color)
    return img


def write_shapes_zip(
    path: Path,
    *,
    classes: int = 3,
    per_class: tuple[int, int, int] = (40, 10, 10),
    image_size: int = 48,
    seed: int = 0,
    image_format: str = "PNG",
) -> Path:
    """A zip with train/val/test folders of `classes` shape classes (PNG, or JPEG like most photo
    datasets); returns `path`."""
    if not 2 <= classes <= len(SHAPES):
        raise ValueError(f"classes must be between 2 and {len(SHAPES)}")
    rng = random.Random(seed)  # noqa: S311 - picture noise, not secrets
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for split, count in zip(("train", "val", "test"), per_class, strict=True):
            for shape in SHAPES[:classes]:
                for i in range(count):
                    buffer = io.BytesIO()
                    _draw(shape, image_size, rng).save(buffer, format=image_format)
                    suffix = "jpg" if image_format.upper() == "JPEG" else image_format.lower()
                    zf.writestr(f"{split}/{shape}/{shape}_{i:04d}.{suffix}", buffer.getvalue())
    return path
