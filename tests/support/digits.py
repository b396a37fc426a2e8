"""Real images without a download: scikit-learn's copy of the UCI handwritten digits (1,797 scanned 8x8
greyscale digits from 43 writers, shipped inside the scikit-learn wheel), written as a dataset zip. Used by
the real-data training test and the time-to-accuracy and model-matrix benchmarks."""

from __future__ import annotations

import io
import random
import zipfile
from pathlib import Path

from PIL import Image
from sklearn.datasets import load_digits


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
