"""Images → uint8 batches: decoded and resized once per run into a cache, or streamed through workers.

Both loaders yield `(uint8 images [B, 3, S, S], int64 targets [B])`; turning them into normalised float
inputs (and augmenting the training split) happens on the training device, in `trainer.preprocess`, so the
host only ever moves bytes. The cache holds every split that fits in `TRAINING_AGENT_DATA_CACHE_MAX_BYTES`
(in memory, or in a file in the run's work folder); a split that does not fit is decoded every epoch by
DataLoader workers instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms.functional import pil_to_tensor

from training_agent.trainer.dataset_checks import Sample
from training_agent.trainer.gpu_decode import DecodeReport, fill_on_device
from training_agent.trainer.images import open_image

logger = logging.getLogger(__name__)

# The ImageNet statistics the torchvision weights were trained with; recorded in the model's metadata so the
# evaluation agent can preprocess the same way.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Batch = tuple[torch.Tensor, torch.Tensor]
CacheMode = Literal["memory", "disk", "off"]
SPLITS = ("train", "val", "test")


def decode_image(path: str | Path, size: int) -> torch.Tensor:
    """The image at `path` as a person sees it (`trainer.images.open_image`), as RGB uint8 [3, size, size]."""
    rgb = open_image(path, draft_size=size).resize((size, size), Image.Resampling.BILINEAR)
    tensor: torch.Tensor = pil_to_tensor(rgb)
    return tensor


class DecodedImages(Dataset[tuple[torch.Tensor, int]]):
    """(path, class index) pairs decoded on access; the layout check already vetted every path."""

    def __init__(self, samples: Sequence[Sample], size: int) -> None:
        self.samples = samples
        self.size = size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, target = self.samples[index]
        return decode_image(path, self.size), target


def epoch_order(n: int, *, shuffle: bool, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of one epoch: a function of (seed, epoch) alone, so a resumed run replays exactly
    the order it was interrupted in."""
    if not shuffle:
        return torch.arange(n)
    generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)
    return torch.randperm(n, generator=generator)


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of indices in `epoch_order`; `set_epoch(epoch, skip)` picks the epoch and how many of its
    batches were already trained on (a resume in the middle of an epoch).

    Under torchrun each rank takes every `world_size`-th index of the epoch's order from its own rank on
    (DistributedSampler's split): the ranks' batch k together are the lone process's batch k at
    `world_size` times the batch size. Training pads the order by repeating its start so that every rank
    has as many batches (DDP waits for all ranks at every step); evaluation does not pad (no sample counts
    twice) and needs no equal counts.

    A last batch of a single image joins the one before it: BatchNorm cannot normalise one sample whose
    feature map is 1x1 (training crashes), and one image would set a whole step's gradient anyway.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = True,
    ) -> None:
        self.n = n
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.pad = pad
        self.epoch = 1
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch = epoch
        self.skip = skip

    @property
    def shard_size(self) -> int:
        """How many samples this rank sees per epoch."""
        if self.pad:
            return -(-self.n // self.world_size)
        return len(range(self.rank, self.n, self.world_size))

    def _starts(self) -> list[int]:
        size = self.shard_size
        starts = list(range(0, size, self.batch_size))
        if len(starts) > 1 and size - starts[-1] == 1:
            starts.pop()
        return starts

    def __len__(self) -> int:
        return len(self._starts())

    def _shard(self) -> torch.Tensor:
        order = epoch_order(self.n, shuffle=self.shuffle, seed=self.seed, epoch=self.epoch)
        if self.world_size == 1:
            return order
        if self.pad and self.n % self.world_size:
            missing = self.world_size - self.n % self.world_size
            order = torch.cat([order, order.repeat(-(-missing // max(self.n, 1)))[:missing]])
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        order = self._shard()
        starts = self._starts()
        ends = [*starts[1:], len(order)]
        for start, end in list(zip(starts, ends, strict=True))[self.skip :]:
            yield order[start:end].tolist()


class Loader(Protocol):
    sampler: EpochBatchSampler
    cached: bool

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Batch]: ...


class CachedLoader:
    """Batches sliced out of a uint8 tensor holding the whole split: no decoding, no workers needed."""

    cached = True

    def __init__(
        self, images: torch.Tensor, targets: torch.Tensor, sampler: EpochBatchSampler, *, pin: bool
    ) -> None:
        self.images = images
        self.targets = targets
        self.sampler = sampler
        self.pin = pin

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Batch]:
        for indices in self.sampler:
            index = torch.tensor(indices)
            images, targets = self.images[index], self.targets[index]
            if self.pin:  # page-locked, so the copy to the GPU can overlap with compute
                images, targets = images.pin_memory(), targets.pin_memory()
            yield images, targets


class StreamingLoader:
    """DataLoader workers decode every epoch: for splits larger than the cache allows."""

    cached = False

    def __init__(
        self, dataset: DecodedImages, sampler: EpochBatchSampler, *, workers: int, pin: bool
    ) -> None:
        self.sampler = sampler
        self.loader: DataLoader[tuple[torch.Tensor, int]] = DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=workers,
            pin_memory=pin,
            persistent_workers=workers > 0,  # no worker start-up cost on every epoch
            prefetch_factor=4 if workers > 0 else None,
        )

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Batch]:
        yield from self.loader


def fill_cache(
    samples: Sequence[Sample],
    size: int,
    images: torch.Tensor,
    workers: int,
    decode_device: str | None = None,
) -> DecodeReport:
    """Decode every sample once, in parallel, into `images` (uint8 [N, 3, size, size]); with a
    `decode_device`, JPEGs are decoded there (`trainer.gpu_decode`) and the rest by PIL in the workers."""
    if decode_device is not None:
        return fill_on_device(samples, size, images, device=decode_device, workers=workers, pil=decode_image)
    decoder: DataLoader[tuple[torch.Tensor, int]] = DataLoader(
        DecodedImages(samples, size), batch_size=64, num_workers=workers, shuffle=False
    )
    start = 0
    for batch, _targets in decoder:
        images[start : start + batch.size(0)] = batch
        start += batch.size(0)
    return DecodeReport(None, pil=len(samples))


@dataclass(frozen=True)
class LoaderOptions:
    image_size: int
    batch_size: int
    seed: int
    workers: int
    pin: bool
    cache: CacheMode
    cache_max_bytes: int
    cache_dir: Path
    rank: int = 0
    world_size: int = 1
    decode_device: str | None = None  # JPEGs of the cache decoded there (nvjpeg on "cuda"); None: PIL only


def _cache_tensor(options: LoaderOptions, split: str, n: int) -> torch.Tensor:
    shape = (n, 3, options.image_size, options.image_size)
    if options.cache == "disk":
        # A file-backed tensor: the page cache keeps what fits in memory, the disk holds the rest.
        path = options.cache_dir / f"{split}.u8"
        total = n * 3 * options.image_size**2
        return torch.from_file(str(path), shared=True, size=total, dtype=torch.uint8).view(shape)
    return torch.empty(shape, dtype=torch.uint8)


def make_loaders(samples: dict[str, list[Sample]], options: LoaderOptions) -> dict[str, Loader]:
    """One loader per split; splits are cached in order (train first) while the budget lasts."""
    budget = options.cache_max_bytes if options.cache != "off" else 0
    per_image = 3 * options.image_size**2
    loaders: dict[str, Loader] = {}
    report = DecodeReport(options.decode_device)
    for split in SPLITS:
        split_samples = samples[split]
        sampler = EpochBatchSampler(
            len(split_samples),
            options.batch_size,
            shuffle=split == "train",
            seed=options.seed,
            rank=options.rank,
            world_size=options.world_size,
            pad=split == "train",
        )
        need = len(split_samples) * per_image
        if need <= budget:
            budget -= need
            images = _cache_tensor(options, split, len(split_samples))
            report.add(
                fill_cache(split_samples, options.image_size, images, options.workers, options.decode_device)
            )
            targets = torch.tensor([target for _path, target in split_samples], dtype=torch.int64)
            loaders[split] = CachedLoader(images, targets, sampler, pin=options.pin)
        else:
            if options.cache != "off":
                logger.info(
                    "The %s split needs %.1f MiB decoded, over the cache's remaining %.1f MiB: streaming it",
                    split,
                    need / 2**20,
                    budget / 2**20,
                )
            dataset = DecodedImages(split_samples, options.image_size)
            loaders[split] = StreamingLoader(dataset, sampler, workers=options.workers, pin=options.pin)
    _log_decoders(report)
    return loaders


def _log_decoders(report: DecodeReport) -> None:
    if report.on_device + report.fallback == 0:
        return  # nothing cached
    if report.device is None:
        logger.info("The cache was filled by PIL: %d images", report.fallback)
        return
    logger.info(
        "The cache was filled by decode_jpeg on %s: %d images; %d by PIL (%d not RGB or greyscale JPEGs, "
        "%d refused by the device decoder)",
        report.device,
        report.on_device,
        report.fallback,
        report.pil,
        report.refused,
    )
