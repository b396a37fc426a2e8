"""Datasets and DataLoaders over the checked samples (Requirements 5.1-5.2)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from training_agent.trainer.dataset_checks import Sample

# The ImageNet statistics the torchvision weights were trained with; recorded in the model's metadata so the
# evaluation agent can preprocess the same way.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_transform(image_size: int) -> Callable[[Image.Image], torch.Tensor]:
    transform: Callable[[Image.Image], torch.Tensor] = transforms.Compose(
        [
            transforms.Resize((image_size, image_size)),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    return transform


class ImageSamples(Dataset[tuple[torch.Tensor, int]]):
    """(path, class index) pairs decoded to RGB tensors; the layout check already vetted every path."""

    def __init__(self, samples: list[Sample], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, target = self.samples[index]
        with Image.open(path) as img:
            return self.transform(img.convert("RGB")), target


def make_loader(
    samples: list[Sample],
    *,
    image_size: int,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    pin_memory: bool,
    generator: torch.Generator | None = None,
) -> DataLoader[tuple[torch.Tensor, int]]:
    return DataLoader(
        ImageSamples(samples, build_transform(image_size)),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=generator,
    )
