"""The decode half of the data gate (Requirements 3.2-3.5), on what `fetch.py` unpacked from the layout's
plan (`core/datasets/layout.py`): every planned image is fully decoded once (`images.check_image`), so
nothing fails later in a DataLoader worker. Unreadable files are skipped and named while they stay under
`TRAINING_AGENT_MAX_BAD_IMAGE_FRACTION` and never empty a class (an image over Pillow's pixel limit, a
decompression bomb, is refused outright); a missing val/ is carved out of train/
when the training option `val_fraction` asks for it; byte-identical images in two splits are reported (or
refused). What it returns is the exact list of samples the trainer will use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from training_agent.core.datasets.layout import SPLITS, DatasetPlan
from training_agent.core.datasets.rules import examples
from training_agent.core.errors import InvalidInputError
from training_agent.trainer.images import PIXEL_LIMIT_SETTING, check_image

__all__ = ["SPLITS", "DatasetLayout", "Sample", "carve_seed", "inspect_dataset"]

Sample = tuple[Path, int]
STEP = "validate_dataset"
NAMED_UNREADABLE = 20  # a warning names this many unreadable files, then says how many more
_DUPLICATE_EXAMPLES = 10
_HASH_CHUNK = 1024 * 1024
BOMB = "decompression bomb"  # how check_image's reason for an image over Pillow's pixel limit begins


@dataclass
class DatasetLayout:
    """The samples per split, and what the gate found on the way: skipped files, the carved validation
    split, images shared between splits, and the plan's summary (split folders, ignored members)."""

    root: Path
    classes: list[str]
    samples: dict[str, list[Sample]]
    counts: dict[str, dict[str, int]]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    plan: dict[str, Any] = field(default_factory=dict)
    val_split: dict[str, Any] | None = None
    duplicates: dict[str, Any] = field(default_factory=lambda: {"count": 0, "examples": []})
    median_side: int | None = None  # of the training images, in pixels: what `recipe: auto` sizes from

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}

    def moved(self, new_root: Path) -> DatasetLayout:
        """The same samples, unpacked under `new_root` instead of `root` (another node's copy)."""
        samples = {
            split: [(new_root / path.relative_to(self.root), target) for path, target in split_samples]
            for split, split_samples in self.samples.items()
        }
        return dataclasses.replace(self, root=new_root, samples=samples)

    def summary(self) -> dict[str, Any]:
        """What goes to agent_logs and the model's metadata: counts per class per split."""
        return {
            "num_classes": len(self.classes),
            "classes": self.classes,
            "images": {split: sum(per_class.values()) for split, per_class in self.counts.items()},
            "images_per_class": self.counts,
            "skipped_files": len(self.skipped),
            "median_image_side": self.median_side,
        }

    def notes(self, val_fraction: float | None) -> list[tuple[str, str, dict[str, Any]]]:
        """(level, message, fields) for agent_logs: what was skipped, carved and found in two splits."""
        notes: list[tuple[str, str, dict[str, Any]]] = []
        if self.skipped:
            named = [f"{p} ({why})" for p, why in self.skipped[:NAMED_UNREADABLE]]
            more = len(self.skipped) - len(named)
            message = f"Skipped {len(self.skipped)} unreadable image(s): {', '.join(named)}"
            skipped = [{"path": p, "reason": why} for p, why in self.skipped[:100]]
            notes.append(("warning", message + (f" and {more} more" if more else ""), {"skipped": skipped}))
        if self.val_split:
            message = (
                f"No val/ folder: {self.val_split['images']} training images (val_fraction {val_fraction}, "
                f"seed {self.val_split['seed']}) form the validation split"
            )
            notes.append(("info", message, {"val_split": self.val_split}))
        elif val_fraction is not None:
            notes.append(("info", "val_fraction is not used: the dataset has its own val/ folder", {}))
        if self.duplicates["count"]:
            message = (
                f"{self.duplicates['count']} image(s) appear byte for byte in more than one split (e.g. "
                f"{self.duplicates['examples'][0]}): the test accuracy may overstate the model"
            )
            notes.append(("warning", message, {"duplicates": self.duplicates}))
        return notes

    def checks(self) -> dict[str, Any]:
        """The model metadata's `dataset_checks`: how the zip was read and what the gate found."""
        return {
            "root": self.plan.get("root", ""),
            "split_folders": self.plan.get("split_folders", {}),
            "ignored_members": self.plan.get("ignored", {"count": 0}),
            "unreadable": {
                "count": len(self.skipped),
                "examples": [{"path": p, "reason": why} for p, why in self.skipped[:NAMED_UNREADABLE]],
            },
            "val_split": self.val_split,
            "duplicates_across_splits": self.duplicates,
        }


def _inspect_file(path: Path) -> tuple[str | None, bytes, int]:
    """Why the image is unreadable (None: it decodes whole), its content hash and its side (the square
    root of its area, from the header alone)."""
    problem = check_image(path)
    if problem:
        return problem, b"", 0
    with Image.open(path) as img:
        width, height = img.size
    return None, _digest(path), round(math.sqrt(width * height))


def inspect_dataset(
    root: Path,
    plan: DatasetPlan,
    *,
    max_bad_fraction: float,
    val_fraction: float | None = None,
    seed: int = 0,
    fail_on_leakage: bool = False,
    workers: int = 1,
) -> DatasetLayout:
    """Decode every planned image under `root` (as `fetch.extract_planned` wrote them); skip unreadable ones
    unless there are too many or a class would be left empty; carve val/ when asked; look for leakage."""
    classes = list(plan.classes)
    samples: dict[str, list[Sample]] = {}
    names: dict[Path, str] = {}  # path -> the member's name in the zip, for messages
    digests: dict[Path, bytes] = {}
    skipped: list[tuple[str, str]] = []
    planned = [
        (split, index, member, root / plan.destination(member))
        for split, per_class in plan.images.items()
        for index, cls in enumerate(classes)
        for member in per_class[cls]
    ]
    # Pillow's decoders and hashlib release the GIL: threads decode on every core the run may use.
    with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
        results = list(pool.map(_inspect_file, [path for *_, path in planned]))
    samples.update({split: [] for split in plan.images})
    train_sides = []
    for (split, index, member, path), (problem, digest, side) in zip(planned, results, strict=True):
        if problem:
            skipped.append((member, problem))
            continue
        if split == "train":
            train_sides.append(side)
        samples[split].append((path, index))
        names[path] = member
        digests[path] = digest
    _check_unreadable(plan, samples, skipped, max_bad_fraction)
    val_split = None
    if plan.missing_val and val_fraction is not None:
        samples["train"], samples["val"], val_split = _carve_val(
            samples["train"], classes, val_fraction, seed
        )
        names.update((path, f"{names[path]} (carved into val)") for path, _ in samples["val"])
    samples = {split: samples[split] for split in SPLITS}
    duplicates = _duplicates(samples, names, digests)
    if fail_on_leakage and duplicates["count"]:
        raise InvalidInputError(
            f"{duplicates['count']:,} image(s) appear byte for byte in more than one split "
            f"({examples(duplicates['examples'], 3)}), so the test accuracy would be measured on images the "
            "model trained on; remove the copies (or set TRAINING_AGENT_FAIL_ON_SPLIT_LEAKAGE=false to warn)",
            step=STEP,
        )
    counts = {
        split: {cls: sum(1 for _, t in samples[split] if t == i) for i, cls in enumerate(classes)}
        for split in SPLITS
    }
    return DatasetLayout(
        root=root,
        classes=classes,
        samples=samples,
        counts=counts,
        skipped=skipped,
        plan=plan.summary(),
        val_split=val_split,
        duplicates=duplicates,
        median_side=int(statistics.median(train_sides)) if train_sides else None,
    )


def carve_seed(seed: int | None, run_id: str) -> int:
    """The option `seed`, else one drawn from the run id: every attempt of a run carves the same split."""
    if seed is not None:
        return seed
    return int.from_bytes(hashlib.blake2b(run_id.encode(), digest_size=4).digest(), "big")


def _digest(path: Path) -> bytes:
    """The file's content hash: byte-identical copies, whatever their names."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.digest()


def _check_unreadable(
    plan: DatasetPlan,
    samples: dict[str, list[Sample]],
    skipped: list[tuple[str, str]],
    max_bad_fraction: float,
) -> None:
    bombs = [(p, why) for p, why in skipped if why.startswith(BOMB)]
    if bombs:
        raise InvalidInputError(
            f"The dataset holds {len(bombs)} image(s) too large to decode safely ({bombs[0][0]}: "
            f"{bombs[0][1]}); remove them, or raise {PIXEL_LIMIT_SETTING} if they are genuine",
            step=STEP,
        )
    total = sum(len(names) for per_class in plan.images.values() for names in per_class.values())
    if total and len(skipped) / total > max_bad_fraction:
        shown = "; ".join(f"{p}: {why}" for p, why in skipped[:5])
        raise InvalidInputError(
            f"{len(skipped)} of {total} files ({len(skipped) / total:.1%}) are not readable images, over the "
            f"limit of {max_bad_fraction:.1%} (TRAINING_AGENT_MAX_BAD_IMAGE_FRACTION). Examples: {shown}",
            step=STEP,
        )
    found = {(split, target) for split, items in samples.items() for _, target in items}
    empty = [
        f"{plan.split_folders[split]}/{cls}"
        for split in plan.images
        for index, cls in enumerate(plan.classes)
        if (split, index) not in found
    ]
    if empty:
        raise InvalidInputError(
            f"These class folders have no readable images: {examples(empty, 10)}; every class needs "
            "readable images in every split (replace the damaged files)",
            step=STEP,
        )


def _carve_val(
    train: list[Sample], classes: list[str], fraction: float, seed: int
) -> tuple[list[Sample], list[Sample], dict[str, Any]]:
    """A stratified, seeded share of each class's training images becomes the validation split."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible split, not a secret
    kept: list[Sample] = []
    val: list[Sample] = []
    per_class: dict[str, int] = {}
    for index, cls in enumerate(classes):
        items = sorted(s for s in train if s[1] == index)
        if len(items) < 2:
            raise InvalidInputError(
                f"Class {cls} has {len(items)} readable training image(s); carving a validation split "
                "(val_fraction) needs at least 2 per class: add images, or a val/ folder",
                step=STEP,
            )
        rng.shuffle(items)
        n_val = min(len(items) - 1, max(1, round(len(items) * fraction)))
        val.extend(items[:n_val])
        kept.extend(items[n_val:])
        per_class[cls] = n_val
    info = {
        "from": "train",
        "fraction": fraction,
        "seed": seed,
        "images": len(val),
        "images_per_class": per_class,
    }
    return sorted(kept), sorted(val), info


def _duplicates(
    samples: dict[str, list[Sample]], names: dict[Path, str], digests: dict[Path, bytes]
) -> dict[str, Any]:
    """Contents found in more than one split: how many, and a few as `train/a.png = test/b.png`."""
    by_digest: dict[bytes, list[tuple[str, Path]]] = {}
    for split in SPLITS:
        for path, _ in samples[split]:
            by_digest.setdefault(digests[path], []).append((split, path))
    shared = [group for group in by_digest.values() if len({split for split, _ in group}) > 1]
    return {"count": len(shared), "examples": [_example(g, names) for g in shared[:_DUPLICATE_EXAMPLES]]}


def _example(group: list[tuple[str, Path]], names: dict[Path, str]) -> str:
    """`train/cat/1.png = test/cat/7.png`: the first copy in each split, then how many more there are."""
    first: dict[str, str] = {}
    for split, path in group:
        first.setdefault(split, names[path])
    more = len(group) - len(first)
    return " = ".join(first.values()) + (f" (+{more} more copies)" if more else "")
