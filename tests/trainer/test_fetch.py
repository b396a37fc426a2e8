"""Safe unpacking of untrusted dataset archives."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.support.datasets import DatasetFactory, layout_members, png_bytes
from training_agent.core.errors import InvalidInputError
from training_agent.trainer.dataset_checks import inspect_dataset
from training_agent.trainer.fetch import extract_zip

LIMITS: dict[str, Any] = {"max_bytes": 10 * 1024 * 1024, "max_files": 1000}


def test_extracts_a_valid_archive(tmp_path: Path, datasets: DatasetFactory) -> None:
    extract_zip(datasets.zip(layout_members()), tmp_path / "out", **LIMITS)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["test", "train", "val"]
    assert (tmp_path / "out" / "train" / "cat" / "0.png").read_bytes() == png_bytes((220, 40, 40))


@pytest.mark.parametrize(
    "member", ["../escape.png", "a/../../escape.png", "/abs/escape.png", "C:/escape.png", "..\\escape.png"]
)
def test_refuses_members_escaping_the_folder(tmp_path: Path, datasets: DatasetFactory, member: str) -> None:
    archive = datasets.zip([*layout_members(), (member, b"x")])
    with pytest.raises(InvalidInputError, match="unsafe path"):
        extract_zip(archive, tmp_path / "out" / "inner", **LIMITS)
    assert not (tmp_path / "out" / "inner").exists()  # partial output removed
    assert not (tmp_path / "out" / "escape.png").exists() and not (tmp_path / "escape.png").exists()


def test_refuses_symlinks(tmp_path: Path, datasets: DatasetFactory) -> None:
    with pytest.raises(InvalidInputError, match="symbolic link"):
        extract_zip(datasets.with_symlink(), tmp_path / "out", **LIMITS)


def test_refuses_archives_over_the_byte_limit(tmp_path: Path, datasets: DatasetFactory) -> None:
    archive = datasets.bomb(megabytes=16)
    assert archive.stat().st_size < 100_000  # the point of a bomb: small on the wire
    with pytest.raises(InvalidInputError, match="expands to 16,"):
        extract_zip(archive, tmp_path / "out", **LIMITS)
    assert not (tmp_path / "out").exists()


def test_byte_limit_counts_what_is_written(
    tmp_path: Path, datasets: DatasetFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Declared sizes can lie; disable the declared check to show the streaming check stops the write too.
    monkeypatch.setattr("training_agent.core.datasets.rules.check_archive", lambda *a, **k: None)
    with pytest.raises(InvalidInputError, match="more than 1,048,576 bytes"):
        extract_zip(datasets.bomb(megabytes=4), tmp_path / "out", max_bytes=1024 * 1024, max_files=1000)
    assert not (tmp_path / "out").exists()


def test_refuses_too_many_members(tmp_path: Path, datasets: DatasetFactory) -> None:
    with pytest.raises(InvalidInputError, match="has 18 members, over the limit of 10"):
        extract_zip(datasets.zip(layout_members()), tmp_path / "out", max_bytes=10**9, max_files=10)


def test_refuses_corrupt_archives(tmp_path: Path, datasets: DatasetFactory) -> None:
    archive = datasets.zip(layout_members())
    data = bytearray(archive.read_bytes())
    # Flip bytes inside the first member's compressed data, keeping the central directory intact.
    first = zipfile.ZipFile(archive).infolist()[0]
    start = first.header_offset + 30 + len(first.filename) + 5
    data[start : start + 20] = bytes(20)
    archive.write_bytes(bytes(data))
    with pytest.raises(InvalidInputError, match="corrupt"):
        extract_zip(archive, tmp_path / "out", **LIMITS)


def test_finds_splits_inside_one_wrapping_folder(tmp_path: Path, datasets: DatasetFactory) -> None:
    archive = datasets.zip([*layout_members(prefix="flowers/"), ("__MACOSX/flowers/._x", b"junk")])
    plan = extract_zip(archive, tmp_path / "out", **LIMITS)
    assert plan.root == "flowers/"
    # Unpacked under the canonical split names; the junk is never written.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["test", "train", "val"]
    layout = inspect_dataset(tmp_path / "out", plan, max_bad_fraction=0)
    assert layout.classes == ["cat", "dog"]
    assert layout.counts == {s: {"cat": 3, "dog": 3} for s in ("train", "val", "test")}


def test_hidden_files_are_ignored(tmp_path: Path, datasets: DatasetFactory) -> None:
    archive = datasets.zip(
        [*layout_members(), ("train/cat/.DS_Store", b"x"), ("train/cat/.hidden.png", b"x")]
    )
    plan = extract_zip(archive, tmp_path / "out", **LIMITS)
    layout = inspect_dataset(tmp_path / "out", plan, max_bad_fraction=0)
    assert layout.classes == ["cat", "dog"] and layout.skipped == []
    assert not (tmp_path / "out" / "train" / "cat" / ".DS_Store").exists()


def test_no_train_folder_lists_what_was_found(tmp_path: Path, datasets: DatasetFactory) -> None:
    archive = datasets.zip([("images/a.png", png_bytes()), ("labels/a.txt", b"cat")])
    with pytest.raises(InvalidInputError, match=r"no train/ folder \(found: images, labels\)"):
        extract_zip(archive, tmp_path / "out", **LIMITS)
    assert not (tmp_path / "out").exists()
