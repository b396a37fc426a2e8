"""Dataset images → 8-bit RGB as a person sees them in a viewer, and a full-decode check for the gate.

Every place the trainer reads a dataset image goes through `open_image`, and the gate's `check_image` decodes
through the same code, so a file that passes the gate cannot fail later in a DataLoader worker.

What "as a person sees it" means here:
- EXIF orientation is applied (phone photos are stored sideways with a tag saying how to turn them).
- 16- and 32-bit greyscale (`I;16`, `I;16B`, `I`, `F`: scientific, medical, depth and thermal images) is
  stretched from the image's own min..max to 0..255; Pillow's own conversion clips at 255, which turns any
  image whose values are over 255 all white. A constant image has no range and becomes mid grey (128).
  NaN and infinite values of float images count as the minimum.
- Transparency (RGBA, LA, PA, palette or single-colour transparency) is composited onto WHITE, the same for
  every image: cut-outs, logos and icons are drawn to be seen on a white page, which is what viewers and
  browsers show, whereas dropping the alpha channel shows whatever colour the transparent pixels happen to
  store (often black, sometimes garbage).
- CMYK (Adobe's inverted JPEGs included), YCbCr, 1-bit and palette images are converted to RGB.
- Animated or multi-page files (GIF, WebP, TIFF, HEIF collections) give their first frame (or primary image).
- HEIC/HEIF through `pillow-heif`, AVIF natively in Pillow (>= 11.3).

Decompression bombs: Pillow refuses images over `Image.MAX_IMAGE_PIXELS` pixels; `set_max_image_pixels`
sets it for this process (from `TRAINING_AGENT_MAX_IMAGE_PIXELS`), before the gate, so that DataLoader
workers forked later inherit it.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

pillow_heif.register_heif_opener()

PIXEL_LIMIT_SETTING = "TRAINING_AGENT_MAX_IMAGE_PIXELS"
BACKGROUND = (255, 255, 255)
_HIGH_BIT_DEPTH = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa"})
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")
_ORIENTATION = 0x0112  # the EXIF tag


def set_max_image_pixels(limit: int) -> None:
    """Pillow's decompression-bomb limit for this process: images with more pixels are refused."""
    Image.MAX_IMAGE_PIXELS = limit


def open_image(path: str | Path, *, draft_size: int | None = None) -> Image.Image:
    """The image at `path` as an 8-bit RGB image, upright, as a viewer shows it (see the module's text).

    `draft_size` lets a JPEG decode at 1/2, 1/4 or 1/8 scale while staying at least that large on each side:
    far less work for photos much larger than the training size.
    """
    with Image.open(path) as img:
        if draft_size:
            img.draft("RGB", (draft_size, draft_size))
        return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """An opened image (its current frame) as upright 8-bit RGB, a new image; decodes it fully."""
    turned = img.getexif().get(_ORIENTATION, 1) not in {1, None}
    # Only a turned image needs exif_transpose's copy: one copy of a 12-megapixel photo less per image.
    upright = ImageOps.exif_transpose(img) if turned else img
    if upright.mode in _HIGH_BIT_DEPTH:
        return _stretch_to_8_bits(upright)
    if upright.mode in _ALPHA_MODES or "transparency" in upright.info:
        return _on_background(upright.convert("RGBA"))
    if upright.mode == "RGB" and turned:
        return upright  # already a new image
    return upright.convert("RGB")


def _stretch_to_8_bits(img: Image.Image) -> Image.Image:
    values = np.asarray(img).astype(np.float64)
    finite = np.isfinite(values)
    low, high = (values[finite].min(), values[finite].max()) if finite.any() else (0.0, 0.0)
    if high > low:
        scaled = (np.where(finite, values, low) - low) * (255.0 / (high - low))
        grey = np.rint(scaled).astype(np.uint8)
    else:
        grey = np.full(values.shape, 128, dtype=np.uint8)
    rgb = Image.fromarray(grey).convert("RGB")
    transparent = img.info.get("transparency")
    if isinstance(transparent, int):  # a 16-bit greyscale PNG's tRNS: one value marks the clear pixels
        mask = Image.fromarray(((values == transparent) * 255).astype(np.uint8))
        rgb.paste(BACKGROUND, mask=mask)
    return rgb


def _on_background(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def check_image(path: str | Path) -> str | None:
    """None when the file decodes fully into what training will read, else a short reason (no paths).

    Decodes every pixel (not only Pillow's `verify()`, which reads no image data), so a truncated JPEG is
    refused here rather than in the middle of training.
    """
    try:
        if Path(path).stat().st_size == 0:
            return "empty file"
        with warnings.catch_warnings():
            # Pillow only warns between the limit and twice the limit; over the limit is a bomb for us.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return _bomb_reason(str(exc))
    except UnidentifiedImageError:
        return "not an image"
    except OSError as exc:
        return "truncated file" if "truncated" in str(exc) else "damaged image data"
    # The decoders of every format plugin raise what they like on damaged data (SyntaxError, ValueError,
    # struct.error, RuntimeError from libheif, ...): any of them means "not readable", never a crash.
    except Exception:  # noqa: BLE001
        return "damaged image data"
    return None


def _bomb_reason(message: str) -> str:
    found = _BOMB_PIXELS.search(message)
    pixels = f"{found.group(1)} pixels" if found else "more pixels than allowed"
    return f"decompression bomb: {pixels} over the limit of {Image.MAX_IMAGE_PIXELS} ({PIXEL_LIMIT_SETTING})"
