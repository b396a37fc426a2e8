"""Local file helpers."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(dest: Path, write: Callable[[Path], object]) -> Path:
    """Have `write` fill a temporary file beside `dest`, then rename it over `dest`: readers see the old
    file or the whole new one, never a half-written one, and a failed write leaves nothing behind."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
