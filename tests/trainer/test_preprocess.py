"""Device-side preprocessing: exact normalisation, train-only augmentation, repeatable and resumable."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from training_agent.trainer.data import IMAGENET_MEAN, IMAGENET_STD
from training_agent.trainer.preprocess import Augmentation, Preprocess

CPU = torch.device("cpu")


def batch(seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (6, 3, 16, 16), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8
    )


def make(augment: bool = True, seed: int = 3, **options: Any) -> Preprocess:
    augmentation = Augmentation(enabled=augment, **{"min_scale": 0.35, "hflip": True, **options})
    return Preprocess(CPU, augmentation=augmentation, seed=seed, channels_last=True, num_classes=4)


def test_eval_normalises_exactly_like_torchvision() -> None:
    images = batch()
    out = make()(images, train=False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (images.float() / 255 - mean) / std)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_augmentation_only_on_training_batches() -> None:
    images = batch()
    plain = make(augment=False)
    assert torch.equal(plain(images, train=True), plain(images, train=False))
    augmented = make()(images, train=True)
    assert augmented.shape == images.shape
    assert not torch.allclose(augmented, make()(images, train=False))


def test_augmentation_is_repeatable_and_resumable() -> None:
    first, second = make(seed=5), make(seed=5)
    torch.testing.assert_close(first(batch(), train=True), second(batch(), train=True))
    saved = first.state_dict()
    expected = first(batch(1), train=True)
    resumed = make(seed=99)
    resumed.load_state_dict(saved)
    torch.testing.assert_close(resumed(batch(1), train=True), expected)


def test_flip_mirrors_some_samples_and_keeps_the_rest() -> None:
    images = torch.rand(32, 3, 8, 8)
    out = make()._random_flip(images)
    mirrored = [torch.equal(o, i.flip(-1)) for o, i in zip(out, images, strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, images, strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True))
    assert any(mirrored) and any(kept)


def test_crop_boxes_stay_inside_the_image_and_cover_min_scale() -> None:
    # A constant image stays constant under any crop that lies inside it (no zero padding).
    images = torch.full((64, 3, 16, 16), 100.0)
    out = make(translate=0.0)._random_resized_crop(images)
    torch.testing.assert_close(out, images)


def test_defaults_cannot_change_a_class() -> None:
    """No flip, a crop of at least 80% of the area, a shift of at most a tenth: a digit stays that digit."""
    defaults = Augmentation()
    assert (defaults.hflip, defaults.vflip, defaults.policy) == (False, False, "none")
    assert defaults.min_scale >= 0.8 and defaults.translate <= 0.1 and not defaults.mixes
    # A bright column at x=10 moves a few pixels at most; a mirror would put it at x=21.
    images = torch.zeros(256, 3, 32, 32)
    images[..., 10] = 255.0
    preprocess = Preprocess(CPU, augmentation=defaults, seed=0, channels_last=False)
    out = preprocess._random_flip(preprocess._random_resized_crop(images))
    column = out.mean(dim=(0, 1, 2)).argmax()
    assert out[..., 20:].amax() < 255 * 0.5 and 6 <= int(column) <= 14


def test_shift_repeats_the_edge_instead_of_a_black_band() -> None:
    """A shifted box leaves the image; the band it uncovers repeats the edge (a black band is a feature
    that no val/test image has: efficientnet_v2 from scratch stayed at chance on it)."""
    images = torch.full((64, 3, 16, 16), 100.0)
    out = make(min_scale=1.0, translate=0.25)._random_resized_crop(images)
    torch.testing.assert_close(out, images)
    # The content does move: a bright left column lands at different places in different samples.
    images[..., 0] = 255.0
    out = make(min_scale=1.0, translate=0.25)._random_resized_crop(images)
    bright_columns = {int((sample[0].mean(dim=0) > 200).sum()) for sample in out}
    assert len(bright_columns) > 2 and out.amin() >= 100.0 - 1e-3


def test_color_jitter_stays_in_range_and_varies_per_sample() -> None:
    images = torch.rand(16, 3, 8, 8) * 255
    out = make(min_scale=1.0, translate=0.0, hflip=False, color_jitter=0.4)._color_jitter(images)
    assert out.min() >= 0 and out.max() <= 255
    ratios = (out.mean(dim=(1, 2, 3)) / images.mean(dim=(1, 2, 3))).tolist()
    assert max(ratios) - min(ratios) > 0.05


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment"])
def test_policies_run_on_uint8_batches(policy: str) -> None:
    out = make(policy=policy)(batch(), train=True)
    assert out.shape == (6, 3, 16, 16) and torch.isfinite(out).all()


def test_mixup_and_cutmix_give_soft_targets() -> None:
    preprocess = make(mixup_alpha=0.4, cutmix_alpha=1.0)
    inputs = preprocess(batch(), train=True)
    mixed, soft = preprocess.mix(inputs, torch.tensor([0, 1, 2, 3, 0, 1]))
    assert mixed.shape == inputs.shape and soft.shape == (6, 4)
    torch.testing.assert_close(soft.sum(dim=1), torch.ones(6))
    plain = make()
    same, hard = plain.mix(inputs, torch.tensor([0, 1, 2, 3, 0, 1]))
    assert same is inputs and hard.tolist() == [0, 1, 2, 3, 0, 1]
