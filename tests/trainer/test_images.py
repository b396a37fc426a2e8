"""trainer.images: every mode and format read as a person sees it, checked pixel by pixel, and the gate's
reasons for files that cannot be read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from tests.conftest import make_settings
from tests.support.image_formats import (
    QUADRANT_COLOURS,
    as_stored,
    encode,
    exif_orientation,
    frames_file,
    gray16,
    noise_jpeg,
    quadrants,
    with_orientation,
)
from training_agent.trainer.data import decode_image
from training_agent.trainer.images import (
    BACKGROUND,
    PIXEL_LIMIT_SETTING,
    check_image,
    open_image,
    set_max_image_pixels,
    to_rgb,
)

WHITE = (255, 255, 255)
RED = (230, 30, 30)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def pixels(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img, dtype=np.int16)


def assert_upright(img: Image.Image, viewed: Image.Image) -> None:
    """`img` is `viewed` (up to compression noise), and not any of its turns or mirror images."""
    differences = {
        orientation: np.abs(pixels(img) - pixels(turned)).mean()
        for orientation in range(1, 9)
        if (turned := as_stored(viewed, orientation)).size == img.size
    }
    assert differences[1] < 12, differences
    assert min(d for o, d in differences.items() if o != 1) > 40, differences


@pytest.fixture
def pixel_limit() -> Iterator[None]:
    before = Image.MAX_IMAGE_PIXELS
    yield
    Image.MAX_IMAGE_PIXELS = before


# -- EXIF orientation ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_gives_the_upright_picture(tmp_path: Path, orientation: int) -> None:
    viewed = quadrants()  # 24x16: the turns (5-8) also swap width and height
    path = write(tmp_path, "photo.jpg", with_orientation(viewed, orientation))

    assert_upright(open_image(path), viewed)
    if orientation != 1:  # the stored pixels really are another picture: the test can fail
        with Image.open(path) as raw:
            assert raw.size != viewed.size or np.abs(pixels(raw.convert("RGB")) - pixels(viewed)).mean() > 40


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_exif_orientation_in_other_formats(tmp_path: Path, fmt: str) -> None:
    viewed = quadrants()
    path = write(tmp_path, f"photo.{fmt.lower()}", with_orientation(viewed, 6, fmt))
    assert_upright(open_image(path), viewed)


@pytest.mark.parametrize("exif", [b"Exif\x00\x00not a tiff", exif_orientation(9)], ids=["damaged", "9"])
def test_a_damaged_or_unknown_orientation_reads_as_stored(tmp_path: Path, exif: bytes) -> None:
    path = write(tmp_path, "odd.jpg", encode(quadrants(), "JPEG", quality=95, exif=exif))
    assert check_image(path) is None
    assert_upright(open_image(path), quadrants())


def test_a_draft_decode_is_upright_and_at_least_the_asked_size(tmp_path: Path) -> None:
    viewed = quadrants(240, 160).resize((480, 320))
    path = write(tmp_path, "big.jpg", with_orientation(viewed, 8))

    img = open_image(path, draft_size=40)

    assert img.size == (60, 40)  # decoded at 1/8 scale: 320x480 stored, 40x60, then turned upright
    assert_upright(img, viewed.resize(img.size, Image.Resampling.BILINEAR))


def test_the_trainer_decodes_through_open_image(tmp_path: Path) -> None:
    """data.decode_image (the cache and the streaming loader) sees the upright, stretched pixels."""
    photo = write(tmp_path, "photo.jpg", with_orientation(quadrants(64, 64), 6))
    depth = write(tmp_path, "depth.png", encode(gray16(np.tile(np.linspace(1000, 3000, 16), (16, 1))), "PNG"))

    upright = decode_image(photo, 8).permute(1, 2, 0).numpy().astype(np.int16)
    ramp = decode_image(depth, 16)[0].numpy()

    assert np.abs(upright[1, 1] - QUADRANT_COLOURS[0]).max() <= 12  # red top-left, as viewed
    assert np.abs(upright[6, 6] - QUADRANT_COLOURS[3]).max() <= 12
    assert ramp.min() == 0 and ramp.max() == 255


# -- 16 and 32 bits -----------------------------------------------------------------------------------------
def test_16_bit_png_is_stretched_by_its_range_not_clipped(tmp_path: Path) -> None:
    values = np.tile(np.linspace(1000, 3000, 32), (8, 1))  # a left-to-right ramp, all of it over 255
    path = write(tmp_path, "depth.png", encode(gray16(values), "PNG"))
    with Image.open(path) as raw:
        assert raw.mode == "I;16"
        assert raw.convert("RGB").getextrema() == ((255, 255),) * 3  # Pillow alone: plain white

    grey = pixels(open_image(path))[..., 0]

    expected = np.rint((values - 1000) / 2000 * 255)
    assert np.abs(grey - expected).max() <= 1
    assert grey.min() == 0 and grey.max() == 255
    assert (np.diff(grey[0]) > 0).all()  # the ramp is visible, step by step


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I", "F"])
def test_every_high_bit_depth_mode_maps_its_range_to_0_255(mode: str) -> None:
    values = np.array([[40000, 40500], [41000, 42000]])
    dtype = np.dtype({"I;16": "<u2", "I;16B": ">u2", "I": "<i4", "F": "<f4"}[mode])
    img = Image.frombytes(mode, (2, 2), values.astype(dtype).tobytes())

    assert pixels(to_rgb(img))[..., 0].tolist() == [[0, 64], [128, 255]]


def test_32_bit_float_tiff_with_negative_and_nan_values(tmp_path: Path) -> None:
    values = np.array([[-0.5, 0.0], [0.25, np.nan]], dtype=np.float32)
    path = write(tmp_path, "thermal.tif", encode(Image.fromarray(values), "TIFF"))
    with Image.open(path) as raw:
        assert raw.mode == "F"

    # -0.5..0.25 → 0..255; NaN counts as the minimum
    assert pixels(open_image(path))[..., 0].tolist() == [[0, 170], [255, 0]]


def test_32_bit_integer_tiff(tmp_path: Path) -> None:
    values = np.array([[-100_000, 0], [100_000, 300_000]], dtype=np.int32)
    path = write(tmp_path, "counts.tiff", encode(Image.fromarray(values), "TIFF"))
    assert pixels(open_image(path))[..., 0].tolist() == [[0, 64], [128, 255]]


def test_a_constant_16_bit_image_is_mid_grey(tmp_path: Path) -> None:
    path = write(tmp_path, "flat.png", encode(gray16(np.full((4, 4), 5000)), "PNG"))
    assert set(pixels(open_image(path)).flatten().tolist()) == {128}


def test_16_bit_transparency_value_is_the_background(tmp_path: Path) -> None:
    values = np.array([[1000, 2000], [3000, 3000]])
    path = write(tmp_path, "keyed.png", encode(gray16(values), "PNG", transparency=1000))
    out = pixels(open_image(path))
    assert out[0, 0].tolist() == list(BACKGROUND)
    assert out[0, 1].tolist() == [128, 128, 128]  # the rest stretched as usual


# -- transparency ------------------------------------------------------------------------------------------
def test_the_background_is_white() -> None:
    assert BACKGROUND == WHITE


def _half_transparent(mode: str) -> Image.Image:
    """Left column fully transparent, middle half transparent, right opaque; every colour black."""
    alpha = Image.fromarray(np.array([[0, 128, 255]] * 2, dtype=np.uint8))
    img = Image.new("RGB" if mode == "RGBA" else "L", (3, 2), 0)
    img.putalpha(alpha)
    assert img.mode == mode
    return img


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_onto_white(tmp_path: Path, mode: str) -> None:
    path = write(tmp_path, "cutout.png", encode(_half_transparent(mode), "PNG"))
    with Image.open(path) as raw:
        assert raw.convert("RGB").getextrema() == ((0, 0),) * 3  # dropping alpha: all black

    row = pixels(open_image(path))[0].tolist()

    assert row == [[255, 255, 255], [127, 127, 127], [0, 0, 0]]


def test_premultiplied_and_palette_alpha_modes_composite_the_same() -> None:
    rgba = _half_transparent("RGBA")
    expected = pixels(to_rgb(rgba))
    assert (pixels(to_rgb(rgba.convert("RGBa"))) == expected).all()
    palette = Image.new("P", rgba.size, 0)
    palette.putpalette([0, 0, 0] * 256)
    palette.putalpha(rgba.getchannel("A"))
    assert palette.mode == "PA"
    assert (pixels(to_rgb(palette)) == expected).all()


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_is_white(tmp_path: Path, fmt: str) -> None:
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 200, 30, 30] + [0, 0, 0] * 254)  # 0 black, 1 red
    img.putpixel((0, 0), 0)
    path = write(tmp_path, f"icon.{fmt.lower()}", encode(img, fmt, transparency=0))
    out = pixels(open_image(path))
    assert out[0, 0].tolist() == list(WHITE)
    assert out[1, 1].tolist() == [200, 30, 30]


@pytest.mark.parametrize(("mode", "key"), [("RGB", (10, 20, 30)), ("L", 10)])
def test_a_transparent_colour_key_is_white(
    tmp_path: Path, mode: str, key: int | tuple[int, int, int]
) -> None:
    img = Image.new(mode, (2, 1), key)
    img.putpixel((1, 0), 200 if mode == "L" else (200, 200, 200))
    path = write(tmp_path, "keyed.png", encode(img, "PNG", transparency=key))
    out = pixels(open_image(path))
    assert out[0, 0].tolist() == list(WHITE)
    assert out[0, 1].tolist() == [200, 200, 200]


# -- colour spaces, bit depths, frames ---------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_is_converted(tmp_path: Path, fmt: str) -> None:
    img = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # no cyan, full magenta and yellow, no black: red
    img.paste((0, 0, 0, 255), (0, 0, 8, 16))  # left half: black
    path = write(tmp_path, f"print.{fmt.lower()}", encode(img, fmt))
    with Image.open(path) as raw:
        assert raw.mode == "CMYK"
    out = pixels(open_image(path))
    assert np.abs(out[8, 13] - [255, 0, 0]).max() <= 8
    assert np.abs(out[8, 2]).max() <= 8


def test_ycbcr_is_converted() -> None:
    img = Image.new("RGB", (4, 4), RED).convert("YCbCr")
    assert np.abs(pixels(to_rgb(img))[0, 0] - RED).max() <= 2


def test_one_bit_images_are_black_and_white(tmp_path: Path) -> None:
    img = Image.new("1", (4, 2), 0)
    img.putpixel((3, 1), 1)
    path = write(tmp_path, "scan.bmp", encode(img, "BMP"))
    out = pixels(open_image(path))
    assert out[1, 3].tolist() == [255, 255, 255] and out[0, 0].tolist() == [0, 0, 0]


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "TIFF"])
def test_animated_and_multi_page_files_give_their_first_frame(tmp_path: Path, fmt: str) -> None:
    path = write(tmp_path, f"clip.{fmt.lower()}", frames_file([RED, (30, 200, 30), (30, 30, 230)], fmt))
    with Image.open(path) as raw:
        assert getattr(raw, "n_frames", 1) == 3
    assert np.abs(pixels(open_image(path)) - RED).max() <= 8


@pytest.mark.parametrize("name", ["photo.jfif", "photo.jpe", "PHOTO.JPG", "Photo.JPEG", "scan.PGM", "x.PPM"])
def test_any_extension_and_case(tmp_path: Path, name: str) -> None:
    fmt = "PPM" if name.lower().endswith(("pgm", "ppm")) else "JPEG"
    img = quadrants()
    path = write(tmp_path, name, encode(img.convert("L") if name.endswith("PGM") else img, fmt))
    assert check_image(path) is None
    assert open_image(path).size == img.size


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heic_and_avif(tmp_path: Path, fmt: str) -> None:
    assert features.check("avif")  # Pillow's own AVIF support; HEIF comes from pillow-heif
    viewed = quadrants(64, 48)
    path = write(tmp_path, f"phone.{'heic' if fmt == 'HEIF' else 'avif'}", with_orientation(viewed, 6, fmt))
    with Image.open(path) as raw:
        assert raw.format == fmt
    assert check_image(path) is None
    assert_upright(open_image(path), viewed)


def test_the_quadrants_are_what_the_exif_tests_think() -> None:
    img = quadrants()
    assert [img.getpixel(xy) for xy in [(0, 0), (23, 0), (0, 15), (23, 15)]] == list(QUADRANT_COLOURS)
    turned = as_stored(img, 6)
    assert turned.size == (16, 24) and turned.getpixel((0, 23)) == QUADRANT_COLOURS[0]
    assert len(exif_orientation(6)) > 0


# -- check_image: the gate's reasons ------------------------------------------------------------------------
def test_a_good_image_passes(tmp_path: Path) -> None:
    assert check_image(write(tmp_path, "ok.jpg", noise_jpeg())) is None


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("cut.jpg", noise_jpeg()[:3000], "truncated file"),
        ("cut.png", encode(Image.new("RGB", (64, 64), RED), "PNG")[:60], "truncated file"),
        ("empty.jpg", b"", "empty file"),
        ("notes.jpg", b"these are my notes, not a photo\n", "not an image"),
        ("page.png", b"<html><body>404 Not Found</body></html>", "not an image"),
    ],
)
def test_unreadable_files_get_a_short_reason_without_a_path(
    tmp_path: Path, name: str, data: bytes, reason: str
) -> None:
    path = write(tmp_path, name, data)
    got = check_image(path)
    assert got == reason
    assert str(tmp_path) not in got and name not in got


def test_a_truncated_jpeg_that_verify_accepts_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "cut.jpg", noise_jpeg()[:3000])
    with Image.open(path) as img:
        img.verify()  # what the old gate did: no complaint
    assert check_image(path) == "truncated file"
    with pytest.raises(OSError, match="truncated"):
        open_image(path)


@pytest.mark.usefixtures("pixel_limit")
@pytest.mark.parametrize("side", [40, 120])  # over the limit (Pillow warns), over twice (Pillow raises)
def test_a_decompression_bomb_names_its_size_and_the_setting(tmp_path: Path, side: int) -> None:
    path = write(tmp_path, "bomb.png", encode(Image.new("L", (side, side)), "PNG"))
    set_max_image_pixels(1000)

    reason = check_image(path)

    expected = f"decompression bomb: {side * side} pixels over the limit of 1000 ({PIXEL_LIMIT_SETTING})"
    assert reason == expected
    set_max_image_pixels(side * side)
    assert check_image(path) is None


def test_the_setting_defaults_to_pillows_limit(tmp_path: Path) -> None:
    assert make_settings(tmp_path).max_image_pixels == 89_478_485
    assert PIXEL_LIMIT_SETTING == "TRAINING_AGENT_MAX_IMAGE_PIXELS"
