"""trainer.gpu_decode: the decode-once cache filled by decode_jpeg holds what the PIL path holds, within small
interpolation differences, whichever decoder ran. decode_jpeg also decodes on the CPU (libjpeg), so the whole
path runs here with device "cpu"; the CUDA test runs only where there is a GPU."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageOps

from tests.conftest import make_settings
from tests.support.image_formats import encode, noise_jpeg, with_orientation
from training_agent.trainer import gpu_decode
from training_agent.trainer.config import TrainingConfig
from training_agent.trainer.data import LoaderOptions, decode_image, fill_cache, make_loaders
from training_agent.trainer.dataset_checks import Sample
from training_agent.trainer.gpu_decode import DecodeReport, device_header, draft_scale, upright
from training_agent.trainer.replica import loader_options

SIZE = 32
# Mean absolute difference to the PIL path, in levels of 255. Measured on these images: 0.1-0.5 (on photos
# 0.13-0.47, see gpu_decode's module text); 3 leaves room for another libjpeg or nvjpeg's own IDCT.
TOLERANCE = 3.0
ON_DEVICE = ("photo.jpg", "turned.jpg", "grey.jpg", "small.jpg")
PIL_FROM_THE_START = ("cmyk.jpg", "picture.png", "png-named.jpg")
REFUSED = ("corrupt.jpg",)


def scene(width: int = 240, height: int = 180) -> Image.Image:
    """Photo-like: smooth gradients with a few hard-edged shapes; different under every turn and flip."""
    x = np.linspace(0, 1, width)[None, :]
    y = np.linspace(0, 1, height)[:, None]
    rgb = np.stack([200 * x + 0 * y, 60 + 150 * y + 0 * x, 180 - 120 * x * y], axis=-1)
    img = Image.fromarray(rgb.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    draw.rectangle([width // 10, height // 10, width // 3, height // 2], fill=(230, 30, 30))
    draw.ellipse([width // 2, height // 2, width * 9 // 10, height * 9 // 10], fill=(240, 240, 40))
    return img


def corrupt_scan(data: bytes) -> bytes:
    """A stray marker inside the entropy-coded data: libjpeg in PIL decodes it with a warning (the gate lets
    it through), torchvision's decode_jpeg refuses it."""
    start = data.index(b"\xff\xda")
    scan = start + 2 + int.from_bytes(data[start + 2 : start + 4], "big")
    return data[: scan + 16] + b"\xff\xee" + data[scan + 18 :]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    contents = {
        "photo.jpg": encode(scene(), "JPEG", quality=90),
        "turned.jpg": with_orientation(scene(), 6),  # stored sideways, tagged to be turned upright
        "grey.jpg": encode(scene().convert("L"), "JPEG", quality=90),
        "small.jpg": encode(scene(20, 15), "JPEG", quality=90),  # no draft, enlarged
        "cmyk.jpg": encode(scene().convert("CMYK"), "JPEG", quality=90),
        "picture.png": encode(scene(), "PNG"),
        "png-named.jpg": encode(scene(), "PNG"),  # the signature decides, not the name
        "corrupt.jpg": corrupt_scan(noise_jpeg(64)),
    }
    paths = {}
    for name, data in contents.items():
        paths[name] = tmp_path / name
        paths[name].write_bytes(data)
    return paths


def fill(paths: list[Path], device: str | None, workers: int = 0) -> tuple[torch.Tensor, DecodeReport]:
    samples: list[Sample] = [(path, 0) for path in paths]
    images = torch.zeros(len(paths), 3, SIZE, SIZE, dtype=torch.uint8)
    report = fill_cache(samples, SIZE, images, workers, decode_device=device)
    return images, report


def mean_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.int() - b.int()).abs().float().mean())


def assert_like_the_pil_path(files: dict[str, Path], device: str) -> None:
    paths = list(files.values())
    images, report = fill(paths, device)

    for row, path in zip(images, paths, strict=True):
        assert mean_difference(row, decode_image(path, SIZE)) < TOLERANCE, path.name
    assert (report.on_device, report.pil, report.refused) == (
        len(ON_DEVICE),
        len(PIL_FROM_THE_START),
        len(REFUSED),
    )
    assert report.fallback == len(PIL_FROM_THE_START) + len(REFUSED)


# -- the test images are what they claim ---------------------------------------------------------------------
def test_the_test_files_take_the_paths_they_are_named_for(files: dict[str, Path]) -> None:
    for name in ON_DEVICE + REFUSED:
        assert device_header(files[name].read_bytes()) is not None, name
    for name in PIL_FROM_THE_START:
        assert device_header(files[name].read_bytes()) is None, name
    with Image.open(files["cmyk.jpg"]) as img:
        assert img.mode == "CMYK"
    decode_image(files["corrupt.jpg"], SIZE)  # PIL decodes it ...
    with pytest.raises(RuntimeError):  # ... decode_jpeg does not
        gpu_decode._decode_jpeg(
            [torch.frombuffer(bytearray(files["corrupt.jpg"].read_bytes()), dtype=torch.uint8)], "cpu"
        )


# -- the cache -----------------------------------------------------------------------------------------------
def test_the_cache_matches_the_pil_path_and_counts_the_fallbacks(files: dict[str, Path]) -> None:
    assert_like_the_pil_path(files, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (nvjpeg)")
def test_the_cache_decoded_by_nvjpeg_matches_the_pil_path(files: dict[str, Path]) -> None:
    assert_like_the_pil_path(files, "cuda")


def test_the_exif_orientation_is_applied(files: dict[str, Path]) -> None:
    """The turned file's stored pixels are the photo turned sideways; its cache row is the photo upright."""
    images, _report = fill([files["photo.jpg"], files["turned.jpg"]], "cpu")
    assert mean_difference(images[0], images[1]) < TOLERANCE


def test_pil_alone_without_a_decode_device(files: dict[str, Path]) -> None:
    paths = list(files.values())
    images, report = fill(paths, None)
    assert (report.device, report.on_device, report.pil) == (None, 0, len(paths))
    assert torch.equal(images[0], decode_image(paths[0], SIZE))


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every batch handed to decode_jpeg."""
    sizes: list[int] = []
    real = gpu_decode._decode_jpeg

    def counting(batch: list[torch.Tensor], device: str) -> list[torch.Tensor]:
        sizes.append(len(batch))
        return real(batch, device)

    monkeypatch.setattr(gpu_decode, "_decode_jpeg", counting)
    return sizes


def test_batches_stay_within_their_bounds(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, calls: list[int]
) -> None:
    jpegs = [files[name] for name in ("photo.jpg", "grey.jpg", "small.jpg")]

    monkeypatch.setattr(gpu_decode, "BATCH_IMAGES", 2)
    fill(jpegs, "cpu")
    assert calls == [2, 1]

    calls.clear()
    monkeypatch.setattr(gpu_decode, "BATCH_BYTES", 1)  # every image over it: one per batch, never none
    images, report = fill(jpegs, "cpu")
    assert calls == [1, 1, 1] and report.on_device == 3
    assert mean_difference(images[2], decode_image(jpegs[2], SIZE)) < TOLERANCE


def test_a_refused_batch_is_retried_one_by_one(files: dict[str, Path], calls: list[int]) -> None:
    _images, report = fill([files["photo.jpg"], files["corrupt.jpg"], files["grey.jpg"]], "cpu")
    assert calls == [3, 1, 1, 1]  # the batch, then each of its images
    assert (report.on_device, report.refused) == (2, 1)


def test_a_truncated_jpeg_fails_as_on_the_pil_path(tmp_path: Path) -> None:
    """Both decoders refuse it, so PIL says why, as it would without the device (the gate refuses such files
    before the cache is filled)."""
    path = tmp_path / "cut.jpg"
    path.write_bytes(noise_jpeg(64)[:-200])
    with pytest.raises(OSError, match="truncated"):
        decode_image(path, SIZE)
    with pytest.raises(OSError, match="truncated"):
        fill([path], "cpu")


def test_workers_hand_the_files_over(files: dict[str, Path]) -> None:
    paths = list(files.values())
    images, report = fill(paths, "cpu", workers=1)
    inline, _report = fill(paths, "cpu")
    assert torch.equal(images, inline) and report.on_device == len(ON_DEVICE)


# -- the parts -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("orientation", range(10))
def test_upright_turns_as_exif_transpose_does(orientation: int) -> None:
    stored = np.arange(3 * 5, dtype=np.uint8).reshape(3, 5) * 7
    exif = Image.Exif()
    exif[0x0112] = orientation
    with Image.open(io.BytesIO(encode(Image.fromarray(stored), "PNG", exif=exif.tobytes()))) as img:
        expected = np.asarray(ImageOps.exif_transpose(img))
    turned = upright(torch.from_numpy(stored)[None], orientation)[0].numpy()
    assert np.array_equal(turned, expected)


@pytest.mark.parametrize(
    ("width", "height", "size", "scale"),
    [(240, 180, 32, 4), (640, 480, 224, 2), (512, 512, 64, 8), (4000, 3000, 32, 8), (20, 15, 32, 1)],
)
def test_draft_scale_is_pils(width: int, height: int, size: int, scale: int) -> None:
    assert draft_scale(width, height, size) == scale
    with Image.open(io.BytesIO(encode(Image.new("RGB", (width, height)), "JPEG"))) as img:
        img.draft("RGB", (size, size))
        assert img.size == (-(-width // scale), -(-height // scale))


# -- the hook ------------------------------------------------------------------------------------------------
def test_make_loaders_logs_which_decoder_filled_the_cache(
    files: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    samples: dict[str, list[Sample]] = {
        "train": [(path, 0) for path in files.values()],
        "val": [(files["photo.jpg"], 1)],
        "test": [(files["cmyk.jpg"], 1)],
    }
    options = LoaderOptions(
        image_size=SIZE,
        batch_size=4,
        seed=1,
        workers=0,
        pin=False,
        cache="memory",
        cache_max_bytes=1 << 30,
        cache_dir=tmp_path,
        decode_device="cpu",
    )
    with caplog.at_level(logging.INFO, logger="training_agent.trainer.data"):
        loaders = make_loaders(samples, options)

    assert all(loader.cached for loader in loaders.values())
    [line] = [r.getMessage() for r in caplog.records if "cache was filled" in r.getMessage()]
    assert "decode_jpeg on cpu: 5 images; 5 by PIL (4 not RGB or greyscale JPEGs, 1 refused by" in line


@pytest.mark.parametrize(
    ("device", "allowed", "expected"),
    [("cuda", True, "cuda"), ("cuda:1", True, "cuda:1"), ("cuda", False, None), ("cpu", True, None)],
)
def test_loader_options_decode_on_cuda_only(
    tmp_path: Path, device: str, allowed: bool, expected: str | None
) -> None:
    settings = make_settings(tmp_path, gpu_decode=allowed)
    options = loader_options(settings, TrainingConfig.from_metadata({}), torch.device(device), 1, tmp_path)
    assert options.decode_device == expected
