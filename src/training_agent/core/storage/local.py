"""A local folder standing in for the bucket (the embedded default)."""

from __future__ import annotations

import shutil
from pathlib import Path

from training_agent.core.errors import ObjectNotFoundError, StorageError
from training_agent.core.files import atomic_write


def download(src: Path, dest: Path) -> None:
    if not src.is_file():
        raise ObjectNotFoundError(f"{src} does not exist (or is not a file)")
    try:
        shutil.copyfile(src, dest)
    except OSError as exc:
        raise StorageError(f"Cannot read {src}: {exc}") from exc


def upload(src: Path, dest: Path) -> None:
    """Copy `src` to `dest` atomically: readers never see a half-written file."""
    try:
        atomic_write(dest, lambda tmp: shutil.copyfile(src, tmp))
    except OSError as exc:
        raise StorageError(f"Cannot write {dest}: {exc}") from exc


def exists(path: Path) -> bool:
    return path.is_file()


def delete(path: Path) -> None:
    path.unlink(missing_ok=True)
