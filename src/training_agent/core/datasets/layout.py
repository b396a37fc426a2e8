"""The layout half of the data gate: which members of a dataset zip are which split's images of which class.

`plan_layout` reads a zip's member listing alone (names and declared sizes, never the images), so the
control plane's pre-flight can run it on the central directory before a GPU is reserved, and the trainer
runs the very same rules before it unpacks. It accepts what people mean:

- the splits at the top of the zip or inside one or two wrapping folders;
- split folders named, in any case, train/training, val/valid/validation/dev, test/testing;
- system files anywhere (see `rules.is_junk`) and files that are not images, which are ignored and counted;
- class names compared across splits after Unicode NFC normalisation;

and refuses, with one sentence that says what is wrong and what to do, what cannot work: no train split,
a missing val/ (unless a validation split is to be carved out of train/), a missing test/, images loose in
a split without class folders, a class folder whose name starts with a dot, fewer than two classes, classes
that differ between splits, an empty class — and, through `rules.py`, unsafe or duplicate names, names over
255 bytes, a file and a folder at one path, and archives over the size, member or compression limits.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from training_agent.core.datasets import rules
from training_agent.core.datasets.members import Member
from training_agent.core.datasets.rules import Entry, examples
from training_agent.core.errors import InvalidInputError

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}
# Still-image formats read through Pillow (HEIC/HEIF and AVIF through its plugins); compared lower-case.
IMAGE_EXTENSIONS = frozenset(
    {
        *(".jpg", ".jpeg", ".jpe", ".jfif"),
        ".png",
        ".gif",
        ".bmp",
        ".webp",
        *(".tif", ".tiff"),
        *(".ppm", ".pgm", ".pbm", ".pnm"),
        *(".heic", ".heif"),
        ".avif",
    }
)
MAX_WRAPPERS = 2
_IGNORED_EXAMPLES = 10

STEP = "validate_dataset"
LAYOUT_HINT = (
    "expected train/, val/ and test/ at the top of the zip (or inside one or two wrapping folders), "
    "each with one folder per class"
)


def is_image_name(name: str) -> bool:
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in IMAGE_EXTENSIONS


@dataclass(frozen=True)
class DatasetPlan:
    """What the zip holds, as the trainer will read it.

    `root` is the wrapping folders' prefix ('' or e.g. 'flowers/'); `split_folders` maps each split found to
    its folder's name as written in the zip (`{"train": "Training", "val": "valid", "test": "Test"}`; no
    "val" when it is missing and may be carved out of train); `classes` are NFC-normalised and sorted;
    `images[split][class]` are the member names (as listed) of that class's images; `ignored` counts the
    files that are not read, by reason, with a few examples.
    """

    root: str
    split_folders: dict[str, str]
    classes: tuple[str, ...]
    images: dict[str, dict[str, tuple[str, ...]]]
    ignored: dict[str, int]
    ignored_examples: tuple[str, ...]
    destinations: dict[str, str] = field(repr=False)  # member name -> '<split>/<class>/<rest>'

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        return {split: {c: len(names) for c, names in per.items()} for split, per in self.images.items()}

    @property
    def ignored_count(self) -> int:
        return sum(self.ignored.values())

    @property
    def missing_val(self) -> bool:
        return "val" not in self.split_folders

    def destination(self, member: str) -> str:
        """Where a planned member is unpacked, relative to the dataset folder: the canonical split name,
        the NFC class name, then the member's own path inside its class folder."""
        return self.destinations[member]

    def planned(self) -> Iterator[tuple[str, str]]:
        """Every image to unpack: (member name, destination)."""
        for per_class in self.images.values():
            for names in per_class.values():
                for name in names:
                    yield name, self.destinations[name]

    def split_mapping(self) -> str:
        """`Training/ as train, valid/ as val, Test/ as test` — for the log line."""
        return ", ".join(f"{self.root}{folder}/ as {split}" for split, folder in self.split_folders.items())

    def summary(self) -> dict[str, Any]:
        """JSON for logs and metadata: no member lists, only counts and a few examples."""
        counts = self.counts
        return {
            "root": self.root,
            "split_folders": dict(self.split_folders),
            "num_classes": len(self.classes),
            "classes": list(self.classes),
            "images": {split: sum(per.values()) for split, per in counts.items()},
            "images_per_class": counts,
            "ignored": {
                "count": self.ignored_count,
                "by_reason": dict(self.ignored),
                "examples": list(self.ignored_examples),
            },
        }


def plan_layout(
    members: Sequence[Member],
    *,
    max_files: int,
    max_bytes: int,
    max_ratio: float | None = None,
    allow_missing_val: bool = False,
) -> DatasetPlan:
    """The dataset's plan from its member listing, or InvalidInputError with one plain sentence.

    `max_files` and `max_bytes` bound the members and their declared total size (the trainer also counts
    what it really writes); `max_ratio` bounds the declared size over the compressed size for archives over
    `rules.RATIO_FLOOR_BYTES`; `allow_missing_val` (the training option `val_fraction` is set) accepts a zip
    without val/, whose validation split the trainer then carves out of train/.
    """
    entries = rules.check_listing(members, max_files=max_files, max_bytes=max_bytes, max_ratio=max_ratio)
    ignored = _Ignored()
    kept = []
    for entry in entries:
        if rules.is_junk(entry):
            ignored.add("system", entry)
        else:
            kept.append(entry)
    root, split_folders = _find_splits(kept)
    _check_missing_splits(root, split_folders, allow_missing_val)
    images: dict[str, dict[str, list[Entry]]] = {}
    for split, folder in split_folders.items():
        images[split] = _split_images(split, (*root, folder), kept, ignored)
    for entry in kept:
        if not entry.is_dir and not _under(entry, root, split_folders.values()):
            ignored.add("outside_splits", entry)
    classes = _check_classes(images, split_folders)
    destinations: dict[str, str] = {}
    planned: dict[str, dict[str, tuple[str, ...]]] = {}
    for split, per_class in images.items():
        planned[split] = {}
        for cls in classes:
            found = sorted(per_class[cls], key=lambda e: e.parts)
            planned[split][cls] = tuple(e.member.name for e in found)
            for e in found:
                destinations[e.member.name] = "/".join((split, cls, *e.parts[len(root) + 2 :]))
    return DatasetPlan(
        root="".join(p + "/" for p in root),
        split_folders=split_folders,
        classes=classes,
        images=planned,
        ignored=dict(ignored.counts),
        ignored_examples=tuple(ignored.examples()),
        destinations=destinations,
    )


class _Ignored:
    """Members that are not read, by reason, with the examples a person would want to see first."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._seen: dict[str, list[str]] = {}

    def add(self, reason: str, entry: Entry) -> None:
        if entry.is_dir:
            return
        self.counts[reason] = self.counts.get(reason, 0) + 1
        seen = self._seen.setdefault(reason, [])
        if len(seen) < _IGNORED_EXAMPLES:
            seen.append(entry.path)

    def examples(self) -> list[str]:
        # The user's own files (a README, labels.csv) before the system's (__MACOSX/...).
        order = sorted(self._seen, key=lambda reason: reason == "system")
        return [path for reason in order for path in self._seen[reason]][:_IGNORED_EXAMPLES]


def _children(entries: Sequence[Entry], prefix: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """The folders and the files directly inside `prefix`, sorted."""
    folders: set[str] = set()
    files: set[str] = set()
    depth = len(prefix)
    for e in entries:
        if len(e.parts) > depth and e.parts[:depth] == prefix:
            if len(e.parts) > depth + 1 or e.is_dir:
                folders.add(e.parts[depth])
            else:
                files.add(e.parts[depth])
    return sorted(folders), sorted(files)


def _find_splits(entries: Sequence[Entry]) -> tuple[tuple[str, ...], dict[str, str]]:
    """The wrapping folders (none, one or two) and the split folders inside them."""
    prefix: tuple[str, ...] = ()
    for depth in range(MAX_WRAPPERS + 1):
        folders, files = _children(entries, prefix)
        found: dict[str, list[str]] = {}
        for folder in folders:
            split = SPLIT_ALIASES.get(folder.casefold())
            if split:
                found.setdefault(split, []).append(folder)
        if "train" in found:
            for split, names in found.items():
                if len(names) > 1:
                    shown = " and ".join(f"{'/'.join((*prefix, n))}/" for n in names)
                    raise InvalidInputError(
                        f"The dataset has two {split} folders ({shown}); keep one of them", step=STEP
                    )
            return prefix, {split: found[split][0] for split in SPLITS if split in found}
        if len(folders) != 1 or depth == MAX_WRAPPERS:
            break
        prefix = (*prefix, folders[0])
    raise InvalidInputError(
        f"The dataset has no train/ folder (found: {_found(prefix, folders, files)}); {LAYOUT_HINT}",
        step=STEP,
    )


def _found(prefix: tuple[str, ...], folders: list[str], files: list[str]) -> str:
    if folders:
        return examples(["/".join((*prefix, f)) for f in folders], 8)
    if files:
        inside = f" in {'/'.join(prefix)}/" if prefix else ""
        return f"no folders, {len(files):,} file(s){inside}"
    return "nothing"


def _check_missing_splits(
    root: tuple[str, ...], split_folders: dict[str, str], allow_missing_val: bool
) -> None:
    missing = [s for s in SPLITS if s not in split_folders and not (s == "val" and allow_missing_val)]
    if not missing:
        return
    where = f" in {'/'.join(root)}/" if root else ""
    message = (
        f"The dataset is missing the {', '.join(m + '/' for m in missing)} folder(s){where}; "
        "expected train/, val/ and test/, each with one folder per class"
    )
    if "val" in missing:
        message += (
            ", or set the training option val_fraction (e.g. 0.2) in the project's metadata to carve a "
            "validation split out of train/"
        )
    raise InvalidInputError(message, step=STEP)


def _under(entry: Entry, root: tuple[str, ...], folders: Any) -> bool:
    depth = len(root)
    return entry.parts[:depth] == root and len(entry.parts) > depth + 1 and entry.parts[depth] in folders


def _split_images(
    split: str, prefix: tuple[str, ...], entries: Sequence[Entry], ignored: _Ignored
) -> dict[str, list[Entry]]:
    """The images of one split by class folder; refuses images loose in the split and dot-named classes."""
    depth = len(prefix)
    shown = "/".join(prefix[-1:])
    per_class: dict[str, list[Entry]] = {}
    loose: list[str] = []
    dotted: set[str] = set()
    for e in entries:
        if e.parts[:depth] != prefix or len(e.parts) <= depth:
            continue
        if len(e.parts) == depth + 1 and not e.is_dir:  # a file directly in the split folder
            if e.parts[-1].startswith("."):
                ignored.add("system", e)
            elif is_image_name(e.parts[-1]):
                loose.append(e.parts[-1])
            else:
                ignored.add("not_image", e)
            continue
        cls = e.parts[depth]
        if cls.startswith("."):
            dotted.add(cls)
            continue
        images = per_class.setdefault(cls, [])
        if e.is_dir:
            continue
        inside = e.parts[depth + 1 :]
        if any(p.startswith(".") for p in inside):
            ignored.add("system", e)  # hidden files and folders inside a class: never the user's images
        elif is_image_name(inside[-1]):
            images.append(e)
        else:
            ignored.add("not_image", e)
    _refuse_loose_or_dotted(shown, loose, dotted)
    return per_class


def _refuse_loose_or_dotted(shown: str, loose: list[str], dotted: set[str]) -> None:
    if loose:
        raise InvalidInputError(
            f"{shown}/ holds {len(loose):,} image(s) directly ({examples(sorted(loose), 3)}) instead of in "
            f"class folders; put each class's images in a folder named after the class, "
            f"e.g. {shown}/<class>/image.jpg",
            step=STEP,
        )
    if dotted:
        names = ", ".join(f"{shown}/{d}/" for d in sorted(dotted))
        raise InvalidInputError(
            f"The class folder {names} has a name that starts with a dot, which hides it on most systems; "
            "rename it without the dot (or remove it if it is not a class)",
            step=STEP,
        )


def _check_classes(
    images: dict[str, dict[str, list[Entry]]], split_folders: dict[str, str]
) -> tuple[str, ...]:
    train = sorted(images["train"])
    if len(train) < 2:
        raise InvalidInputError(
            f"{split_folders['train']}/ has {len(train)} class folder(s); a classifier needs at least 2",
            step=STEP,
        )
    for split, per_class in images.items():
        if split == "train":
            continue
        if sorted(per_class) != train:
            only_train = sorted(set(train) - set(per_class))
            only_split = sorted(set(per_class) - set(train))
            folder, train_folder = split_folders[split], split_folders["train"]
            raise InvalidInputError(
                f"The class folders of {folder}/ differ from {train_folder}/: "
                f"missing in {folder}/: {only_train or '-'}; not in {train_folder}/: {only_split or '-'}. "
                "Every split needs the same class folders",
                step=STEP,
            )
    empty = [
        f"{split_folders[split]}/{cls}"
        for split in SPLITS
        if split in images
        for cls in train
        if not images[split][cls]
    ]
    if empty:
        raise InvalidInputError(
            f"These class folders have no images: {examples(empty, 10)}; every class needs images in "
            f"{', '.join(f + '/' for f in split_folders.values())}",
            step=STEP,
        )
    return tuple(train)
