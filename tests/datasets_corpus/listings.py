"""Member listings for the pure `plan_layout` (names and declared sizes only, no zip): fast, many cases. Each
says what must happen: accepted (with the plan's attributes to compare) or refused (with the text the
one-sentence message must contain)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.datasets_corpus.layouts import NFD_CAFE
from training_agent.core.datasets.members import Member


def listing(names: Iterable[str], size: int = 1000, compressed: int | None = None) -> list[Member]:
    return [
        Member(
            n, 0 if n.endswith("/") else size, 0 if n.endswith("/") else (compressed or size), n.endswith("/")
        )
        for n in names
    ]


def tree(
    splits: Sequence[str] = ("train", "val", "test"),
    classes: Sequence[str] = ("cat", "dog"),
    per_class: int = 2,
    prefix: str = "",
    ext: str = ".jpg",
) -> list[str]:
    return [f"{prefix}{s}/{c}/{i}{ext}" for s in splits for c in classes for i in range(per_class)]


@dataclass(frozen=True)
class ListingCase:
    names: list[str]
    refused: str | None = None  # text the refusal must contain; None: accepted
    expect: dict[str, Any] = field(default_factory=dict)  # accepted: DatasetPlan attributes to compare
    options: dict[str, Any] = field(default_factory=dict)  # plan_layout keyword arguments
    members: list[Member] | None = None  # instead of `names`, when sizes matter


CANONICAL = {"train": "train", "val": "val", "test": "test"}

LISTINGS: dict[str, ListingCase] = {
    # accepted: wrappers
    "canonical": ListingCase(
        tree(), expect={"root": "", "split_folders": CANONICAL, "classes": ("cat", "dog")}
    ),
    "one wrapper": ListingCase(tree(prefix="flowers/"), expect={"root": "flowers/"}),
    "two wrappers": ListingCase(tree(prefix="export/flowers/"), expect={"root": "export/flowers/"}),
    "wrapper with a readme beside it": ListingCase(
        ["README.md", "LICENSE", *tree(prefix="data/")], expect={"root": "data/", "ignored_count": 2}
    ),
    "explicit folder entries": ListingCase(
        ["train/", "train/cat/", "train/dog/", "val/", "test/", *tree()], expect={"classes": ("cat", "dog")}
    ),
    "folders beside the splits": ListingCase(
        [*tree(), "extras/a.jpg", "labels.csv"], expect={"ignored": {"outside_splits": 2}}
    ),
    "nested folders inside a class": ListingCase(
        [*tree(), "train/cat/2019/a.jpg", "train/cat/2019/b.jpg"], expect={"counts.train.cat": 4}
    ),
    "non-images in class folders": ListingCase(
        [*tree(), "train/cat/labels.txt", "val/dog/notes.xml"], expect={"ignored": {"not_image": 2}}
    ),
    "every image extension, any case": ListingCase(
        [
            *tree(),
            *(
                f"train/cat/x{i}{ext}"
                for i, ext in enumerate(
                    [
                        *(".JPG", ".Jpeg", ".jpe", ".JFIF", ".PNG", ".gif", ".BMP", ".webp", ".TIF"),
                        *(".tiff", ".ppm", ".PGM", ".pbm", ".pnm", ".HEIC", ".heif", ".AVIF"),
                    ]
                )
            ),
        ],
        expect={"counts.train.cat": 19},
    ),
    "class names NFC across splits": ListingCase(
        [
            *tree(classes=("café", "dog"), splits=("train",)),
            *tree(classes=(NFD_CAFE, "dog"), splits=("val", "test")),
        ],
        expect={"classes": ("café", "dog")},
    ),
    "missing val allowed (val_fraction)": ListingCase(
        tree(splits=("train", "test")),
        options={"allow_missing_val": True},
        expect={"split_folders": {"train": "train", "test": "test"}, "missing_val": True},
    ),
    # refused: where the splits are
    "no train folder": ListingCase(
        ["images/a.png", "labels/a.txt"], refused="no train/ folder (found: images, labels)"
    ),
    "loose files only": ListingCase(
        ["a.jpg", "b.jpg"], refused="no train/ folder (found: no folders, 2 file(s))"
    ),
    "empty zip": ListingCase([], refused="no train/ folder (found: nothing)"),
    "three wrappers": ListingCase(tree(prefix="a/b/c/"), refused="no train/ folder (found: a/b/c)"),
    "two train folders": ListingCase(
        [*tree(), *tree(splits=("Training",))], refused="two train folders (Training/ and train/)"
    ),
    "missing val": ListingCase(
        tree(splits=("train", "test")), refused="missing the val/ folder(s); expected train/, val/ and test/"
    ),
    "missing val says how to carve": ListingCase(
        tree(splits=("train", "test")), refused="set the training option val_fraction"
    ),
    "missing test": ListingCase(tree(splits=("train", "val")), refused="missing the test/ folder(s)"),
    "missing test with val_fraction": ListingCase(
        tree(splits=("train",)), options={"allow_missing_val": True}, refused="missing the test/ folder(s)"
    ),
    # refused: classes
    "images loose in train": ListingCase(
        [*tree(splits=("val", "test")), "train/a.jpg", "train/b.jpg"],
        refused="train/ holds 2 image(s) directly (a.jpg, b.jpg) instead of in class folders",
    ),
    "dot class folder": ListingCase(
        [*tree(), "train/.cats/1.jpg"],
        refused="The class folder train/.cats/ has a name that starts with a dot",
    ),
    "one class": ListingCase(
        tree(classes=("cat",)), refused="train/ has 1 class folder(s); a classifier needs at least 2"
    ),
    "class missing from val": ListingCase(
        [*tree(splits=("train", "test")), *tree(splits=("val",), classes=("cat",))],
        refused="The class folders of val/ differ from train/: missing in val/: ['dog']; not in train/: -",
    ),
    "class missing from test": ListingCase(
        [*tree(splits=("train", "val")), *tree(splits=("test",), classes=("cat", "bird"))],
        refused="missing in test/: ['dog']; not in train/: ['bird']",
    ),
    "empty class": ListingCase(
        [*tree(splits=("train", "val")), *tree(splits=("test",), classes=("cat",)), "test/dog/notes.txt"],
        refused="These class folders have no images: test/dog",
    ),
    # refused: names
    "file and folder at one path": ListingCase(
        [*tree(), "train/cat"], refused="both a file and a folder named train/cat"
    ),
    "duplicate member": ListingCase(
        [*tree(), "train/cat/0.jpg"], refused="lists 1 file(s) more than once (train/cat/0.jpg)"
    ),
    "duplicate after NFC": ListingCase(
        [*tree(), "train/cat/café.jpg", f"train/cat/{NFD_CAFE}.jpg"],
        refused="more than once (train/cat/café.jpg)",
    ),
    "name over 255 bytes": ListingCase(
        [*tree(), f"train/cat/{'a' * 256}.jpg"], refused="longer than the 255 bytes a file system allows"
    ),
    "unsafe path": ListingCase([*tree(), "../evil.jpg"], refused="unsafe path '../evil.jpg'"),
    "absolute path": ListingCase([*tree(), "/etc/evil.jpg"], refused="unsafe path '/etc/evil.jpg'"),
    # refused: limits
    "too many members": ListingCase(
        tree(per_class=5), options={"max_files": 10}, refused="has 30 members, over the limit of 10"
    ),
    "too many bytes": ListingCase(
        tree(), options={"max_bytes": 5000}, refused="expands to 12,000 bytes, over the limit"
    ),
    "compression ratio": ListingCase(
        [],
        members=listing(tree(), size=10 * 1024**2, compressed=1024),
        options={"max_ratio": 100.0},
        refused="over the limit of 100 times",
    ),
    "high ratio under the floor is fine": ListingCase(
        [], members=listing(tree(), size=1024**2, compressed=1024), options={"max_ratio": 100.0}, expect={}
    ),
}
for _kind, _alias_names in {
    "train": ("train", "Train", "TRAINING", "training"),
    "val": ("val", "valid", "Validation", "dev", "VAL"),
    "test": ("test", "Testing", "TEST"),
}.items():
    for _alias in _alias_names:
        _splits = [_alias if s == _kind else s for s in ("train", "val", "test")]
        LISTINGS[f"alias {_alias} for {_kind}"] = ListingCase(
            tree(splits=_splits),
            expect={"split_folders": dict(zip(("train", "val", "test"), _splits, strict=True))},
        )
for _junk in (
    "__MACOSX/train/cat/._0.jpg",
    "train/cat/._0.jpg",
    "train/cat/.DS_Store",
    ".DS_Store",
    "train/dog/Thumbs.db",
    "val/desktop.ini",
    "train/cat/.ipynb_checkpoints/0-checkpoint.jpg",
    "train/.ipynb_checkpoints/x.jpg",
    ".ipynb_checkpoints/train/cat/0.jpg",
    ".git/objects/ab/cdef",
    "data/.git/HEAD",
):
    LISTINGS[f"junk {_junk}"] = ListingCase(
        [*tree(), _junk], expect={"classes": ("cat", "dog"), "ignored": {"system": 1}, "counts.train.cat": 2}
    )
