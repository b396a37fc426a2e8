"""The archive-level rules of the data gate, on a zip's member listing alone: safe names, the size, member
and compression limits, which members are the system's junk, and names that cannot be unpacked as they are
(duplicates, over-long names, a file and a folder at one path). `layout.py` reads the dataset out of what
passes; both run in the control plane's pre-flight and in the trainer, so neither imports torch or PIL.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from training_agent.core.datasets.members import Member
from training_agent.core.errors import InvalidInputError

# Names no dataset means as data, wherever they are: what macOS, Windows, Jupyter and git leave behind.
JUNK_FOLDERS = frozenset({"__macosx", ".ipynb_checkpoints", ".git"})
JUNK_FILES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})
# A file name (one path segment) longer than this cannot be created on ext4, XFS, APFS or NTFS.
MAX_NAME_BYTES = 255
# The compression-ratio limit is applied only to archives that expand to more than this: a small dataset of
# flat synthetic images (BMP, PPM) compresses very well and is harmless at any ratio.
RATIO_FLOOR_BYTES = 64 * 1024**2
_DRIVE = re.compile(r"^[A-Za-z]:")
_EXAMPLES = 5

EXTRACT = "extract"


@dataclass(frozen=True)
class Entry:
    """A member as the layout rules see it: its path NFC-normalised, split into segments."""

    member: Member
    parts: tuple[str, ...]
    is_dir: bool

    @property
    def path(self) -> str:
        return "/".join(self.parts)


def examples(items: Sequence[str], limit: int = _EXAMPLES) -> str:
    """`a, b, c and 7 more`: a message names a few, never hundreds."""
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit:,} more" if len(items) > limit else "")


def normalise(member: Member) -> Entry:
    name = unicodedata.normalize("NFC", member.name.replace("\\", "/"))
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    return Entry(member, parts, member.is_dir or name.endswith("/"))


def is_junk(entry: Entry) -> bool:
    """System files: `__MACOSX/`, `.ipynb_checkpoints/`, `.git/` anywhere; `.DS_Store`, `Thumbs.db`,
    `desktop.ini` and AppleDouble `._*` files."""
    if any(p.casefold() in JUNK_FOLDERS for p in entry.parts):
        return True
    if entry.is_dir or not entry.parts:
        return False
    name = entry.parts[-1]
    return name.startswith("._") or name.casefold() in JUNK_FILES


def only_zip(members: Sequence[Member]) -> str | None:
    """The name of the one member when it is a zip and nothing else is there but system files (a dataset
    zipped once more: the trainer unwraps it)."""
    kept = [e for e in (normalise(m) for m in members if not m.is_dir) if not is_junk(e)]
    if len(kept) == 1 and kept[0].parts and kept[0].parts[-1].lower().endswith(".zip"):
        return kept[0].member.name
    return None


def check_listing(
    members: Sequence[Member], *, max_files: int, max_bytes: int, max_ratio: float | None = None
) -> list[Entry]:
    """Every archive-level rule on a listing; returns its entries (junk included) for the layout."""
    check_archive(members, max_files=max_files, max_bytes=max_bytes, max_ratio=max_ratio)
    entries = [normalise(m) for m in members]
    check_names(e for e in entries if not is_junk(e))
    return entries


def check_archive(
    members: Sequence[Member], *, max_files: int, max_bytes: int, max_ratio: float | None = None
) -> None:
    """Refuse members that would land outside the target folder, and archives over the limits."""
    for member in members:
        name = member.name.replace("\\", "/")
        if name.startswith("/") or _DRIVE.match(name) or ".." in name.split("/"):
            raise InvalidInputError(
                f"The dataset archive contains an unsafe path {member.name!r} (absolute or with '..'); "
                "rebuild the zip with paths relative to its root",
                step=EXTRACT,
            )
    if len(members) > max_files:
        raise InvalidInputError(
            f"The dataset archive has {len(members):,} members, over the limit of {max_files:,} "
            "(TRAINING_AGENT_MAX_DATASET_FILES)",
            step=EXTRACT,
        )
    declared = sum(m.size for m in members)
    if declared > max_bytes:
        raise InvalidInputError(
            f"The dataset archive expands to {declared:,} bytes, over the limit of {max_bytes:,} "
            "(TRAINING_AGENT_MAX_DATASET_BYTES)",
            step=EXTRACT,
        )
    compressed = sum(m.compressed_size for m in members)
    if max_ratio is not None and declared > RATIO_FLOOR_BYTES and declared > max_ratio * max(compressed, 1):
        raise InvalidInputError(
            f"The dataset archive expands to {declared:,} bytes from {compressed:,} "
            f"({declared / max(compressed, 1):,.0f} times), over the limit of {max_ratio:g} times: image "
            "files barely compress, so this looks like a decompression bomb; rebuild the zip from the images",
            step=EXTRACT,
        )


def check_names(entries: Iterable[Entry]) -> None:
    """Refuse names that cannot be unpacked as listed: over-long, listed twice, or a file and a folder at
    the same path."""
    files: dict[tuple[str, ...], int] = {}
    folders: set[tuple[str, ...]] = set()
    for entry in entries:
        for part in entry.parts:
            if len(part.encode("utf-8")) > MAX_NAME_BYTES:
                shown = part if len(part) <= 40 else part[:40] + "…"
                raise InvalidInputError(
                    f"A name in the dataset zip is longer than the {MAX_NAME_BYTES} bytes a file system "
                    f"allows ({len(part.encode('utf-8')):,} bytes: {shown}); shorten it and rebuild the zip",
                    step=EXTRACT,
                )
        if entry.is_dir:
            folders.add(entry.parts)
        else:
            files[entry.parts] = files.get(entry.parts, 0) + 1
        folders.update(entry.parts[:i] for i in range(1, len(entry.parts)))
    twice = sorted("/".join(parts) for parts, n in files.items() if n > 1)
    if twice:
        raise InvalidInputError(
            f"The dataset zip lists {len(twice):,} file(s) more than once ({examples(twice)}); "
            "rebuild it so that each file appears once",
            step=EXTRACT,
        )
    clashes = sorted("/".join(parts) for parts in folders & files.keys())
    if clashes:
        raise InvalidInputError(
            f"The dataset zip has both a file and a folder named {examples(clashes)}; "
            "rename one of them and rebuild the zip",
            step=EXTRACT,
        )
