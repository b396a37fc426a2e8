"""A local folder standing in for the bucket (the embedded default)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from training_agent.core.errors import ObjectNotFoundError, StorageError


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
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as exc:
        raise StorageError(f"Cannot write {dest}: {exc}") from exc


def exists(path: Path) -> bool:
    return path.is_file()


def delete(path: Path) -> None:
    path.unlink(missing_ok=True)
