"""Check an unpacked dataset: train/val/test splits, the same class folders in each, readable images
(Requirements 3.2-3.5). What it returns is the exact list of samples the trainer will use."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from training_agent.core.errors import InvalidInputError

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"})
_IGNORED_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})
_EXAMPLES = 5

Sample = tuple[Path, int]


@dataclass
class DatasetLayout:
    root: Path
    classes: list[str]
    samples: dict[str, list[Sample]]
    counts: dict[str, dict[str, int]]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}

    def summary(self) -> dict[str, Any]:
        """What goes to agent_logs and the model's metadata: counts per class per split."""
        return {
            "num_classes": len(self.classes),
            "classes": self.classes,
            "images": {split: sum(per_class.values()) for split, per_class in self.counts.items()},
            "images_per_class": self.counts,
            "skipped_files": len(self.skipped),
        }


def _visible(path: Path) -> bool:
    return not path.name.startswith(".") and path.name not in _IGNORED_NAMES


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and _visible(p))


def find_root(extracted: Path) -> Path:
    """The folder holding the splits: the archive root, or the one folder a zip tool wrapped it in."""
    root = extracted
    for _ in range(2):
        if (root / "train").is_dir():
            return root
        children = _subdirs(root)
        if len(children) != 1:
            break
        root = children[0]
    found = ", ".join(p.name for p in _subdirs(extracted)) or "nothing"
    raise InvalidInputError(
        f"The dataset has no train/ folder (found: {found}); expected train/, val/ and test/ at the top "
        "of the zip, each with one folder per class",
        step="validate_dataset",
    )


def _check_image(path: Path) -> str | None:
    """None if `path` is a readable image, else why not."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return "not an image file extension"
    try:
        with Image.open(path) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"unreadable image ({exc.__class__.__name__})"
    return None


def _split_classes(root: Path) -> dict[str, list[str]]:
    missing = [s for s in SPLITS if not (root / s).is_dir()]
    if missing:
        raise InvalidInputError(
            f"The dataset is missing the {', '.join(m + '/' for m in missing)} folder(s); "
            "expected train/, val/ and test/, each with one folder per class",
            step="validate_dataset",
        )
    classes = {split: [p.name for p in _subdirs(root / split)] for split in SPLITS}
    if len(classes["train"]) < 2:
        raise InvalidInputError(
            f"train/ has {len(classes['train'])} class folder(s); a classifier needs at least 2",
            step="validate_dataset",
        )
    for split in ("val", "test"):
        if classes[split] != classes["train"]:
            only_train = sorted(set(classes["train"]) - set(classes[split]))
            only_split = sorted(set(classes[split]) - set(classes["train"]))
            raise InvalidInputError(
                f"The class folders of {split}/ differ from train/: "
                f"missing in {split}/: {only_train or '-'}; not in train/: {only_split or '-'}. "
                "Every split needs the same class folders",
                step="validate_dataset",
            )
    return classes


def inspect_dataset(root: Path, *, max_bad_fraction: float) -> DatasetLayout:
    """Validate the layout and every file; unreadable files are skipped, unless there are too many."""
    classes = _split_classes(root)["train"]
    samples: dict[str, list[Sample]] = {}
    counts: dict[str, dict[str, int]] = {}
    skipped: list[tuple[str, str]] = []
    total = 0
    for split in SPLITS:
        samples[split] = []
        counts[split] = {}
        for index, name in enumerate(classes):
            good = 0
            for path in sorted(p for p in (root / split / name).rglob("*") if p.is_file() and _visible(p)):
                total += 1
                problem = _check_image(path)
                if problem:
                    skipped.append((str(path.relative_to(root)), problem))
                    continue
                samples[split].append((path, index))
                good += 1
            counts[split][name] = good
    if total and len(skipped) / total > max_bad_fraction:
        examples = "; ".join(f"{p}: {why}" for p, why in skipped[:_EXAMPLES])
        raise InvalidInputError(
            f"{len(skipped)} of {total} files ({len(skipped) / total:.1%}) are not readable images, over the "
            f"limit of {max_bad_fraction:.1%} (TRAINING_AGENT_MAX_BAD_IMAGE_FRACTION). Examples: {examples}",
            step="validate_dataset",
        )
    empty = [f"{split}/{name}" for split in SPLITS for name, n in counts[split].items() if n == 0]
    if empty:
        raise InvalidInputError(
            f"These class folders have no readable images: {', '.join(empty)}; every class needs images "
            "in train/, val/ and test/",
            step="validate_dataset",
        )
    return DatasetLayout(root=root, classes=classes, samples=samples, counts=counts, skipped=skipped)
