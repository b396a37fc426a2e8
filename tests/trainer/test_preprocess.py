"""Device-side preprocessing: exact normalisation, train-only augmentation, repeatable and resumable."""

from __future__ import annotations

import torch

from training_agent.trainer.data import IMAGENET_MEAN, IMAGENET_STD
from training_agent.trainer.preprocess import Preprocess

CPU = torch.device("cpu")


def batch(seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (6, 3, 16, 16), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8
    )


def make(augment: bool = True, seed: int = 3) -> Preprocess:
    return Preprocess(CPU, augment=augment, min_scale=0.35, seed=seed, channels_last=True)


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
    out = make()._random_resized_crop(images)
    torch.testing.assert_close(out, images)
