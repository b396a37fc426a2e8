"""The decode-once cache and the streaming fallback yield the same batches, in a per-epoch order that a
resumed run can replay."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from training_agent.trainer.data import (
    CachedLoader,
    EpochBatchSampler,
    LoaderOptions,
    StreamingLoader,
    decode_image,
    epoch_order,
    make_loaders,
)
from training_agent.trainer.dataset_checks import Sample

SIZE = 12


@pytest.fixture
def samples(tmp_path: Path) -> dict[str, list[Sample]]:
    """Each image a distinct flat colour, so a batch tells which samples it holds."""
    out: dict[str, list[Sample]] = {}
    for split, n in (("train", 10), ("val", 4), ("test", 3)):
        out[split] = []
        for i in range(n):
            path = tmp_path / f"{split}-{i}.png"
            Image.new("RGB", (20 + i, 17), (i * 20, 100, 200)).save(path)
            out[split].append((path, i % 2))
    return out


def options(tmp_path: Path, **changes: object) -> LoaderOptions:
    values: dict[str, object] = {
        "image_size": SIZE,
        "batch_size": 4,
        "seed": 7,
        "workers": 0,
        "pin": False,
        "cache": "memory",
        "cache_max_bytes": 1 << 30,
        "cache_dir": tmp_path,
    }
    values.update(changes)
    return LoaderOptions(**values)  # type: ignore[arg-type]


def epoch(loader: object, number: int, skip: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.sampler.set_epoch(number, skip)  # type: ignore[attr-defined]
    batches: list[tuple[torch.Tensor, torch.Tensor]] = list(loader)  # type: ignore[call-overload]
    return batches


def test_decode_image_is_uint8_rgb_at_size(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    Image.new("L", (640, 480), 128).save(path, quality=90)  # greyscale JPEG: converted to RGB
    image = decode_image(path, 32)
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
    assert abs(int(image.float().mean()) - 128) <= 2


def test_epoch_order_depends_on_seed_and_epoch_only() -> None:
    assert torch.equal(
        epoch_order(50, shuffle=True, seed=1, epoch=3), epoch_order(50, shuffle=True, seed=1, epoch=3)
    )
    assert not torch.equal(
        epoch_order(50, shuffle=True, seed=1, epoch=3), epoch_order(50, shuffle=True, seed=1, epoch=4)
    )
    assert not torch.equal(
        epoch_order(50, shuffle=True, seed=2, epoch=3), epoch_order(50, shuffle=True, seed=1, epoch=3)
    )
    assert torch.equal(epoch_order(5, shuffle=False, seed=1, epoch=9), torch.arange(5))
    assert sorted(epoch_order(50, shuffle=True, seed=1, epoch=1).tolist()) == list(range(50))


@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_cached_and_streamed_batches_are_identical(
    tmp_path: Path, samples: dict[str, list[Sample]], cache: str
) -> None:
    cached = make_loaders(samples, options(tmp_path, cache=cache))
    streamed = make_loaders(samples, options(tmp_path, cache="off"))
    assert all(isinstance(loader, CachedLoader) for loader in cached.values())
    assert all(isinstance(loader, StreamingLoader) for loader in streamed.values())
    if cache == "disk":
        assert sorted(p.name for p in tmp_path.glob("*.u8")) == ["test.u8", "train.u8", "val.u8"]
    for split in ("train", "val", "test"):
        for number in (1, 2):
            a, b = epoch(cached[split], number), epoch(streamed[split], number)
            assert len(a) == len(b) == len(cached[split])
            for (images_a, targets_a), (images_b, targets_b) in zip(a, b, strict=True):
                assert images_a.dtype == torch.uint8 and images_a.shape[1:] == (3, SIZE, SIZE)
                assert torch.equal(images_a, images_b) and torch.equal(targets_a, targets_b)
    # Training batches are reshuffled every epoch; val and test never are.
    assert not torch.equal(epoch(cached["train"], 1)[0][0], epoch(cached["train"], 2)[0][0])
    assert torch.equal(epoch(cached["val"], 1)[0][0], epoch(cached["val"], 2)[0][0])


def test_skip_resumes_the_same_epoch_order(tmp_path: Path, samples: dict[str, list[Sample]]) -> None:
    loader = make_loaders(samples, options(tmp_path))["train"]
    whole = epoch(loader, 3)
    rest = epoch(loader, 3, skip=1)
    assert len(rest) == len(whole) - 1
    for (a, _), (b, _) in zip(whole[1:], rest, strict=True):
        assert torch.equal(a, b)


def test_splits_over_the_budget_are_streamed(tmp_path: Path, samples: dict[str, list[Sample]]) -> None:
    per_image = 3 * SIZE * SIZE
    # Room for the training split (10 images) and the test split (3), not for val (4) after train.
    loaders = make_loaders(samples, options(tmp_path, cache_max_bytes=per_image * 13))
    assert [loaders[s].cached for s in ("train", "val", "test")] == [True, False, True]


@pytest.mark.parametrize(
    ("n", "batch", "sizes"), [(33, 32, [33]), (65, 32, [32, 33]), (64, 32, [32, 32]), (1, 32, [1])]
)
def test_a_last_batch_of_one_image_joins_the_one_before(n: int, batch: int, sizes: list[int]) -> None:
    sampler = EpochBatchSampler(n, batch, shuffle=True, seed=0)
    batches = list(sampler)
    assert [len(b) for b in batches] == sizes and len(sampler) == len(sizes)
    assert sorted(i for b in batches for i in b) == list(range(n))
    sampler.set_epoch(1, skip=1)
    assert [len(b) for b in sampler] == sizes[1:]


def test_batchnorm_trains_on_a_dataset_whose_last_batch_would_be_one_image() -> None:
    # 33 samples at batch 32: without the merge, BatchNorm on a 1x1 map raises "Expected more than 1 value".
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.Flatten())
    images = torch.randn(33, 3, 1, 1)
    for indices in EpochBatchSampler(33, 32, shuffle=True, seed=0):
        model(images[indices]).sum().backward()
