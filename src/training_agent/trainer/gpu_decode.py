"""The decode-once cache filled by `torchvision.io.decode_jpeg` on the training device (nvjpeg on CUDA).

Decoding every JPEG of a split with PIL keeps all CPU cores busy for minutes on a large dataset while the GPU
waits; nvjpeg decodes the same files in a fraction of the time. The result must not depend on which decoder
ran, so only what the device decodes as `trainer.images.open_image` does goes there:

- files that start with a JPEG signature (FF D8 FF) and that PIL's header read calls "RGB" or "L". Everything
  else (PNG, GIF, WebP, TIFF, HEIF, ...) and CMYK/YCCK JPEGs are decoded by PIL (`data.decode_image`), in the
  DataLoader workers: libjpeg on the CPU converts Adobe CMYK correctly, but torchvision's nvjpeg decoder asks
  for RGB output without allowing CMYK, and these files are rare (print work) anyway.
- EXIF orientation is read from the same header (`getexif()`, as `open_image` does) and applied here after
  the resize: `decode_jpeg(..., apply_exif_orientation=True)` only does it on the CPU and ignores it on CUDA.
- A batch that the device decoder refuses is retried image by image; the JPEGs it still refuses (a corrupt
  scan that libjpeg in PIL decodes with a warning, an encoding nvjpeg does not support) go to PIL.

The result is the PIL path's within small interpolation differences (`resize`: PIL's draft emulated by a box
average, then the same bilinear filter). Mean absolute difference to `data.decode_image`, in levels of 255,
measured on CPU at sizes 32/64/224: photos (sklearn's china and flower, matplotlib's grace_hopper) 0.13-0.47
(a few pixels on sharp edges up to 18 apart), flat and quadrant test images 0-0.2, and the worst case, JPEG
noise, 0.3/1.4/5.7 (all of its content is the detail where the 1/2-scale IDCT and a box average differ).
Without the draft emulation photos were 0.8-3.3 apart.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_jpeg

from training_agent.trainer.dataset_checks import Sample

logger = logging.getLogger(__name__)

JPEG_SIGNATURE = b"\xff\xd8\xff"
DEVICE_MODES = frozenset({"RGB", "L"})  # PIL's mode of the JPEGs the device decodes as PIL does
BATCH_BYTES = 256 * 2**20  # decoded RGB bytes per decode_jpeg call: bounds the device memory it takes
BATCH_IMAGES = 128
_ORIENTATION = 0x0112  # the EXIF tag

PilDecode = Callable[[Path, int], torch.Tensor]  # `data.decode_image`: the path every non-device image takes

# EXIF orientation → the turn that shows the image upright, on [..., H, W] (what `ImageOps.exif_transpose`
# does for the same value; others leave the image as stored, as it does).
_UPRIGHT: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {
    2: lambda t: t.flip(-1),
    3: lambda t: t.flip(-2, -1),
    4: lambda t: t.flip(-2),
    5: lambda t: t.transpose(-2, -1),
    6: lambda t: t.rot90(-1, (-2, -1)),
    7: lambda t: t.transpose(-2, -1).flip(-2, -1),
    8: lambda t: t.rot90(1, (-2, -1)),
}


@dataclass
class DecodeReport:
    """Which decoder filled a cache: counted per image."""

    device: str | None  # None: PIL alone (no device decoding asked for)
    on_device: int = 0
    pil: int = 0  # not a JPEG the device decodes like PIL: PIL from the start
    refused: int = 0  # JPEGs the device decoder refused: PIL afterwards

    @property
    def fallback(self) -> int:
        return self.pil + self.refused

    def add(self, other: DecodeReport) -> None:
        self.on_device += other.on_device
        self.pil += other.pil
        self.refused += other.refused


class _Item(NamedTuple):
    """What a worker hands over for one sample: a JPEG's bytes for the device, or PIL's finished image."""

    row: int  # the sample's index, its row in the cache
    jpeg: torch.Tensor | None  # the file's bytes, uint8 [n]
    image: torch.Tensor | None  # uint8 [3, size, size]
    orientation: int
    decoded_bytes: int


def device_header(data: bytes) -> tuple[int, int] | None:
    """(EXIF orientation, decoded RGB bytes) of a JPEG that the device decodes as PIL does, else None."""
    if not data.startswith(JPEG_SIGNATURE):
        return None
    try:
        with Image.open(io.BytesIO(data)) as img:  # the header only: no pixel is decoded
            if img.mode not in DEVICE_MODES:
                return None
            return int(img.getexif().get(_ORIENTATION, 1) or 1), 3 * img.width * img.height
    # Whatever PIL cannot make sense of, PIL decodes later and reports as it would without this module.
    except Exception:  # noqa: BLE001
        return None


class _ReadFiles(Dataset[_Item]):
    """Runs in the DataLoader workers: reads each file, and decodes there with PIL what the device won't."""

    def __init__(self, samples: Sequence[Sample], size: int, pil: PilDecode) -> None:
        self.samples = samples
        self.size = size
        self.pil = pil

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> _Item:
        path = self.samples[index][0]
        with open(path, "rb") as file:
            # The signature first: the rest of a file that PIL decodes anyway is not read here.
            data = file.read(len(JPEG_SIGNATURE))
            if data == JPEG_SIGNATURE:
                data += file.read()
        header = device_header(data)
        if header is None:
            return _Item(index, None, self.pil(path, self.size), 1, 0)
        return _Item(index, torch.frombuffer(bytearray(data), dtype=torch.uint8), None, *header)


def _decode_jpeg(batch: list[torch.Tensor], device: str) -> list[torch.Tensor]:
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders for TorchCodec, which has no batched nvjpeg decode yet.
        warnings.simplefilter("ignore", DeprecationWarning)
        decoded = decode_jpeg(batch, device=device, mode=ImageReadMode.RGB)
    return list(decoded)


def _decode_each(batch: list[torch.Tensor], device: str) -> list[torch.Tensor | None]:
    """The batch decoded, None for each JPEG the device decoder refuses (one bad file fails a whole call)."""
    try:
        return list(_decode_jpeg(batch, device))
    # torchvision raises RuntimeError for a bad bitstream; an nvjpeg status or a device out of memory comes
    # in other types. Any of them: decode one by one, and hand what still fails to PIL.
    except Exception as exc:  # noqa: BLE001
        logger.debug("decode_jpeg refused a batch of %d (%s): decoding one by one", len(batch), exc)
    decoded: list[torch.Tensor | None] = []
    for data in batch:
        try:
            decoded.extend(_decode_jpeg([data], device))
        except Exception:  # noqa: BLE001
            decoded.append(None)
    return decoded


def draft_scale(width: int, height: int, size: int) -> int:
    """The 1/scale at which `open_image(draft_size=size)` has libjpeg decode (`JpegImageFile.draft`)."""
    fits = min(width // size, height // size)
    return next((scale for scale in (8, 4, 2) if fits >= scale), 1)


def resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [3, H, W] at full scale → uint8 [3, size, size] as the PIL path makes it from the same JPEG.

    PIL's draft decodes at 1/2, 1/4 or 1/8 scale, close to averaging each scale x scale block (exactly that
    at 1/8: the DC coefficient); a box average stands in for it. Then PIL's bilinear filter, whose kernel
    widens when shrinking: `interpolate(antialias=True)` is that filter (0.05-0.13 levels apart from PIL).
    """
    pixels = image[None].float()
    scale = draft_scale(image.shape[-1], image.shape[-2], size)
    if scale > 1:
        pixels = F.avg_pool2d(pixels, scale, scale, ceil_mode=True)  # ceil: PIL rounds the size up
    resized = F.interpolate(pixels, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized[0].round_().clamp_(0, 255).to(torch.uint8)


def upright(image: torch.Tensor, orientation: int) -> torch.Tensor:
    turn = _UPRIGHT.get(orientation)
    return turn(image) if turn else image


class _Filler:
    """Copies decoded rows into the cache; JPEGs wait in a batch bounded by count and decoded bytes."""

    def __init__(
        self, samples: Sequence[Sample], size: int, images: torch.Tensor, device: str, pil: PilDecode
    ) -> None:
        self.samples = samples
        self.size = size
        self.images = images
        self.device = device
        self.pil = pil
        self.pending: list[_Item] = []
        self.pending_bytes = 0
        self.report = DecodeReport(device)

    def take(self, item: _Item) -> None:
        if item.image is not None:
            self.images[item.row] = item.image
            self.report.pil += 1
            return
        if self.pending and (
            len(self.pending) >= BATCH_IMAGES or self.pending_bytes + item.decoded_bytes > BATCH_BYTES
        ):
            self.flush()
        self.pending.append(item)
        self.pending_bytes += item.decoded_bytes

    def flush(self) -> None:
        items, self.pending, self.pending_bytes = self.pending, [], 0
        if not items:
            return
        decoded = _decode_each([item.jpeg for item in items if item.jpeg is not None], self.device)
        rows, indices = [], []
        for item, image in zip(items, decoded, strict=True):
            if image is None:
                self.images[item.row] = self.pil(self.samples[item.row][0], self.size)
                self.report.refused += 1
                continue
            rows.append(upright(resize(image, self.size), item.orientation))
            indices.append(item.row)
        if rows:
            # One copy back per batch instead of one per image.
            self.images[torch.tensor(indices)] = torch.stack(rows).cpu()
            self.report.on_device += len(rows)


def _items(samples: Sequence[Sample], size: int, workers: int, pil: PilDecode) -> Iterator[_Item]:
    # batch_size=None: items one by one, in order; the workers read (and PIL-decode) ahead.
    loader: DataLoader[_Item] = DataLoader(
        _ReadFiles(samples, size, pil), batch_size=None, num_workers=workers, shuffle=False
    )
    yield from loader


def fill_on_device(
    samples: Sequence[Sample], size: int, images: torch.Tensor, *, device: str, workers: int, pil: PilDecode
) -> DecodeReport:
    """Decode every sample once into `images` (uint8 [N, 3, size, size]): JPEGs on `device`, the rest (and
    what the device refuses) with `pil`."""
    filler = _Filler(samples, size, images, device, pil)
    for item in _items(samples, size, workers, pil):
        filler.take(item)
    filler.flush()
    return filler.report
