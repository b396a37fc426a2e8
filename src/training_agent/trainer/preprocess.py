"""uint8 batches → normalised float inputs on the training device, with batched train-time augmentation.

Augmenting whole batches on the device (one `roi_align` call does every sample's crop and shift, colour
jitter is three multiply-adds) keeps the host's few cores free: on a GPU the host only copies bytes; on a
CPU it is one vectorised op instead of a PIL pipeline per image.

The default augmentation cannot change a class: a mild crop (≥ 80% of the area), a small shift and light
colour jitter. Flips, strong crops, RandAugment/TrivialAugment and mixup/cutmix are opt-in (`Augmentation`):
a mirrored digit or sign is another class, and a strong crop can cut out what made the class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torchvision.ops import roi_align
from torchvision.transforms import v2

from training_agent.trainer.config import TrainingConfig
from training_agent.trainer.data import IMAGENET_MEAN, IMAGENET_STD

_RATIO = (3 / 4, 4 / 3)  # the aspect ratios torchvision's RandomResizedCrop samples from
# ITU-R 601 luma weights: the grey a saturation change blends towards.
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Augmentation:
    """What the training split's batches go through (never val/test)."""

    enabled: bool = True
    min_scale: float = 0.8
    translate: float = 0.1
    color_jitter: float = 0.1
    hflip: bool = False
    vflip: bool = False
    policy: str = "none"
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0

    @classmethod
    def from_config(cls, config: TrainingConfig) -> Augmentation:
        return cls(
            enabled=config.augment,
            min_scale=config.augment_min_scale,
            translate=config.augment_translate,
            color_jitter=config.augment_color_jitter,
            hflip=config.augment_hflip,
            vflip=config.augment_vflip,
            policy=config.augment_policy,
            mixup_alpha=config.mixup_alpha,
            cutmix_alpha=config.cutmix_alpha,
        )

    @property
    def mixes(self) -> bool:
        return self.enabled and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)


def _policy(name: str) -> v2.Transform | None:
    if name == "randaugment":
        return v2.RandAugment()
    if name == "trivialaugment":
        return v2.TrivialAugmentWide()
    return None


class Preprocess:
    """Normalise (and, for training, augment) uint8 [B, 3, S, S] batches already on `device`."""

    def __init__(
        self,
        device: torch.device,
        *,
        augmentation: Augmentation,
        seed: int,
        channels_last: bool,
        num_classes: int = 2,
    ) -> None:
        self.device = device
        self.augmentation = augmentation
        self.channels_last = channels_last
        self.policy = _policy(augmentation.policy)
        self.mixer = _mixer(augmentation, num_classes)
        # Crop boxes, flips and jitter are drawn on the CPU from their own generator: repeatable, and
        # resumable. (The policy and the mixer draw from torch's global generator, which checkpoints keep.)
        self.generator = torch.Generator().manual_seed(seed)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        # (x / 255 - mean) / std as one multiply-add.
        self.scale = 1.0 / (255.0 * std)
        self.shift = -mean / std

    def __call__(self, images: torch.Tensor, *, train: bool) -> torch.Tensor:
        augment = train and self.augmentation.enabled
        if augment and self.policy is not None:
            # The policies' ops are per image on uint8: applied on the host before the copy.
            images = torch.stack([self.policy(image) for image in images])
        x = images.to(self.device, non_blocking=True).float()
        if augment:
            x = self._random_resized_crop(x)
            x = self._random_flip(x)
            x = self._color_jitter(x)
        x = torch.addcmul(self.shift, x, self.scale)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def mix(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixup/CutMix of a training batch: soft targets [B, classes]; unchanged when not asked for."""
        if self.mixer is None or inputs.size(0) < 2:
            return inputs, targets
        mixed, soft = self.mixer(inputs, targets)
        return mixed, soft

    def _random_resized_crop(self, x: torch.Tensor) -> torch.Tensor:
        options = self.augmentation
        if options.min_scale >= 1 and options.translate == 0:
            return x
        batch, _channels, height, width = x.shape
        area = options.min_scale + (1 - options.min_scale) * torch.rand(batch, generator=self.generator)
        log_ratio = math.log(_RATIO[0]) + (math.log(_RATIO[1]) - math.log(_RATIO[0])) * torch.rand(
            batch, generator=self.generator
        )
        ratio = torch.exp(log_ratio)
        crop_w = torch.sqrt(area * ratio).clamp(max=1.0) * width
        crop_h = torch.sqrt(area / ratio).clamp(max=1.0) * height
        # The box may leave the image by `translate` of its side: a shift. The uncovered band repeats the
        # image's edge rather than being black: a black band is a feature no val/test image has, and
        # efficientnet_v2 from scratch stayed at chance on it (it learns with the edge repeated).
        shift_x, shift_y = options.translate * width, options.translate * height
        x1 = torch.rand(batch, generator=self.generator) * (width - crop_w + 2 * shift_x) - shift_x
        y1 = torch.rand(batch, generator=self.generator) * (height - crop_h + 2 * shift_y) - shift_y
        if options.translate > 0:
            pad_x, pad_y = math.ceil(shift_x) + 1, math.ceil(shift_y) + 1
            x = torch.nn.functional.pad(x, (pad_x, pad_x, pad_y, pad_y), mode="replicate")
            x1, y1 = x1 + pad_x, y1 + pad_y
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
        for wanted, dim in ((self.augmentation.hflip, -1), (self.augmentation.vflip, -2)):
            if wanted:
                flip = (torch.rand(x.size(0), generator=self.generator) < 0.5).to(x.device)
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(dim), x)
        return x

    def _color_jitter(self, x: torch.Tensor) -> torch.Tensor:
        """Brightness, contrast and saturation, each by a factor in [1 - j, 1 + j] per sample."""
        strength = self.augmentation.color_jitter
        if strength <= 0:
            return x
        factors = 1 + strength * (2 * torch.rand(3, x.size(0), 1, 1, 1, generator=self.generator) - 1)
        brightness, contrast, saturation = factors.to(x.device)
        x = x * brightness
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * contrast + mean
        luma = torch.tensor(_LUMA, device=x.device).view(1, 3, 1, 1)
        grey = (x * luma).sum(dim=1, keepdim=True)
        x = (x - grey) * saturation + grey
        return x.clamp(0, 255)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


def _mixer(options: Augmentation, num_classes: int) -> v2.Transform | None:
    if not options.mixes:
        return None
    mixers: list[v2.Transform] = []
    if options.mixup_alpha > 0:
        mixers.append(v2.MixUp(alpha=options.mixup_alpha, num_classes=num_classes))
    if options.cutmix_alpha > 0:
        mixers.append(v2.CutMix(alpha=options.cutmix_alpha, num_classes=num_classes))
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)
