"""uint8 batches → normalised float inputs on the training device, with batched train-time augmentation.

Augmenting whole batches on the device (one `roi_align` call does every sample's random resized crop) keeps
the host's few cores free: on a GPU the host only copies bytes; on a CPU it is one vectorised op instead of
a PIL pipeline per image.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torchvision.ops import roi_align

from training_agent.trainer.data import IMAGENET_MEAN, IMAGENET_STD

_RATIO = (3 / 4, 4 / 3)  # the aspect ratios torchvision's RandomResizedCrop samples from


class Preprocess:
    """Normalise (and, for training, augment) uint8 [B, 3, S, S] batches already on `device`."""

    def __init__(
        self,
        device: torch.device,
        *,
        augment: bool,
        min_scale: float,
        seed: int,
        channels_last: bool,
    ) -> None:
        self.device = device
        self.augment = augment
        self.min_scale = min_scale
        self.channels_last = channels_last
        # Crop boxes and flips are drawn on the CPU from their own generator: repeatable, and resumable.
        self.generator = torch.Generator().manual_seed(seed)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        # (x / 255 - mean) / std as one multiply-add.
        self.scale = 1.0 / (255.0 * std)
        self.shift = -mean / std

    def __call__(self, images: torch.Tensor, *, train: bool) -> torch.Tensor:
        x = images.to(self.device, non_blocking=True).float()
        if train and self.augment:
            x = self._random_resized_crop(x)
            x = self._random_flip(x)
        x = torch.addcmul(self.shift, x, self.scale)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _random_resized_crop(self, x: torch.Tensor) -> torch.Tensor:
        batch, _channels, height, width = x.shape
        area = self.min_scale + (1 - self.min_scale) * torch.rand(batch, generator=self.generator)
        log_ratio = math.log(_RATIO[0]) + (math.log(_RATIO[1]) - math.log(_RATIO[0])) * torch.rand(
            batch, generator=self.generator
        )
        ratio = torch.exp(log_ratio)
        crop_w = torch.sqrt(area * ratio).clamp(max=1.0) * width
        crop_h = torch.sqrt(area / ratio).clamp(max=1.0) * height
        x1 = torch.rand(batch, generator=self.generator) * (width - crop_w)
        y1 = torch.rand(batch, generator=self.generator) * (height - crop_h)
        boxes = torch.stack([torch.arange(batch, dtype=torch.float32), x1, y1, x1 + crop_w, y1 + crop_h], 1)
        cropped: torch.Tensor = roi_align(
            x,
            boxes.to(x.device),
            output_size=(height, width),
            spatial_scale=1.0,
            sampling_ratio=1,
            aligned=True,
        )
        return cropped

    def _random_flip(self, x: torch.Tensor) -> torch.Tensor:
        flip = (torch.rand(x.size(0), generator=self.generator) < 0.5).to(x.device)
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
