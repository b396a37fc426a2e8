"""Training on real images: scikit-learn's copy of the UCI handwritten digits (1,797 scanned 8x8 digits from
43 writers), shipped inside the scikit-learn wheel, so no download is needed."""

from __future__ import annotations

import io
import random
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from sklearn.datasets import load_digits

from tests.conftest import make_settings, seed_project
from training_agent.core.records import open_records
from training_agent.core.storage import ObjectStorage
from training_agent.trainer.pipeline import TrainingRun

# A small CNN from scratch reaches ~0.97-0.99 on this set; 0.9 leaves room for CPU and seed variation.
MIN_TEST_ACCURACY = 0.9


def write_digits_zip(path: Path, *, seed: int = 0) -> Path:
    """train/val/test (70/15/15 per class) folders of 8x8 greyscale PNGs, one folder per digit."""
    digits = load_digits()
    by_class: dict[int, list[int]] = {}
    for index, target in enumerate(digits.target):
        by_class.setdefault(int(target), []).append(index)
    rng = random.Random(seed)
    with zipfile.ZipFile(path, "w") as zf:
        for target, indices in sorted(by_class.items()):
            rng.shuffle(indices)
            n_val = n_test = len(indices) * 15 // 100
            splits = {
                "test": indices[:n_test],
                "val": indices[n_test : n_test + n_val],
                "train": indices[n_test + n_val :],
            }
            for split, members in splits.items():
                for index in members:
                    pixels = (digits.images[index] * (255 / 16)).astype("uint8")  # 0-16 ink levels → 0-255
                    buffer = io.BytesIO()
                    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
                    zf.writestr(f"{split}/digit_{target}/{index:04d}.png", buffer.getvalue())
    return path


@pytest.mark.slow
def test_trains_a_real_digit_classifier(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    records = open_records(settings)
    metadata = {
        "preferred_model": "resnet18",
        "pretrained": False,
        "epochs": 8,
        "image_size": 32,
        "batch_size": 32,
        "learning_rate": 0.002,
        "augment": False,  # mirror images of digits are other digits (or none)
        "lr_schedule": "cosine",
        "seed": 0,
    }
    project = seed_project(records, str(write_digits_zip(tmp_path / "digits.zip")), metadata=metadata)
    started = time.perf_counter()
    result = TrainingRun(
        project.id, settings=settings, records=records, storage=ObjectStorage(settings)
    ).execute()
    seconds = time.perf_counter() - started
    assert result.succeeded, result.error
    metrics = result.metrics
    print(
        f"digits: test accuracy {metrics['test_accuracy']:.4f}, "
        f"macro F1 {metrics['test_macro_f1']:.4f}, {seconds:.1f} s"
    )
    assert metrics["dataset"]["images"] == {"train": 1265, "val": 266, "test": 266}
    assert metrics["test_accuracy"] >= MIN_TEST_ACCURACY
    assert metrics["test_macro_f1"] >= MIN_TEST_ACCURACY
    assert len(metrics["test_metrics"]["per_class"]) == 10
