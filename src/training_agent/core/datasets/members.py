"""One member of a dataset archive, as its central directory describes it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Member:
    """`name` is the member's path as decoded (see listing.py for how names without the UTF-8 flag are
    read), '/'-separated, relative to the archive's root; sizes are what the central directory declares."""

    name: str
    size: int
    compressed_size: int
    is_dir: bool
