"""A zip's member listing read from the end of the object, without downloading its images.

A zip keeps its table of contents, the central directory, at its end, behind the End Of Central Directory
record (EOCD; for archives over 4 GiB or 65,535 members also a ZIP64 EOCD record and its locator). So one
ranged read of the object's tail gives the EOCD and, for most datasets, the whole directory too; a larger
directory costs one more read. Whatever the zip's size, the listing takes a stat and at most three ranged
reads (the third only to tell a cut-off zip from something that is not a zip at all).

What the directory declares is all this sees: member names and sizes, never their bytes. The trainer still
checks what it actually unpacks (trainer/fetch.py), so a forged directory can mislead the pre-flight but
never the run.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Protocol

from training_agent.core.datasets.members import Member
from training_agent.core.datasets.names import UTF8_FLAG, decode_member_name
from training_agent.core.errors import InvalidInputError, ObjectNotFoundError
from training_agent.core.storage.objects import ObjectInfo

# The layouts of APPNOTE.TXT, section 4.3, little-endian.
_EOCD = struct.Struct(
    "<4s4H2LH"
)  # signature, disk, directory's disk, entries here, entries, size, offset, comment
_EOCD_SIG = b"PK\x05\x06"
_ZIP64_LOCATOR = struct.Struct("<4sLQL")  # signature, the record's disk, the record's offset, disks
_ZIP64_LOCATOR_SIG = b"PK\x06\x07"
_ZIP64_EOCD = struct.Struct(
    "<4sQ2H2L4Q"
)  # signature, size, versions, disks, entries here, entries, size, offset
_ZIP64_EOCD_SIG = b"PK\x06\x06"
_ENTRY = struct.Struct("<4s6H3L5H2L")  # the central directory's fixed 46 bytes per member
_ENTRY_SIG = b"PK\x01\x02"
_LOCAL_HEADER_SIG = b"PK\x03\x04"
_ZIP64_EXTRA = 0x0001
_UNICODE_PATH_EXTRA = 0x7075  # Info-ZIP: a UTF-8 copy of a name stored in a legacy code page
_MAX_COMMENT = 0xFFFF

# The first read: the EOCD with the longest comment a zip may carry, and enough before it that a dataset's
# whole directory usually comes along (2,000 members of 80-byte names are about 250 KB).
TAIL_BYTES = 512 * 1024
# A directory larger than this is not read: at ~100 bytes a member it would list millions of members, far
# over any dataset limit, and a damaged or hostile EOCD must not make the API allocate gigabytes.
MAX_DIRECTORY_BYTES = 256 * 1024**2


class RangeReader(Protocol):
    """What the listing needs of ObjectStorage (tests wrap it to count the requests)."""

    def stat(self, url: str) -> ObjectInfo | None: ...

    def read_range(self, url: str, start: int, end: int) -> bytes: ...


@dataclass(frozen=True)
class _Directory:
    """Where the central directory is and what the EOCD says of it."""

    offset: int  # in the object, corrected for bytes prepended to the zip (a self-extractor's stub)
    size: int
    entries: int


def list_zip_members(storage: RangeReader, url: str) -> list[Member]:
    """The members of the zip at `url`, from its central directory, in the directory's order."""
    info = storage.stat(url)
    if info is None:
        raise ObjectNotFoundError(f"The dataset object {url} does not exist; upload it or fix its gcs_url")
    size = info.size
    tail_start = max(0, size - TAIL_BYTES)
    tail = storage.read_range(url, tail_start, size)
    directory = _find_directory(storage, url, size, tail, tail_start)
    if directory.offset >= tail_start:
        start = directory.offset - tail_start
        data = tail[start : start + directory.size]
    else:
        data = storage.read_range(url, directory.offset, directory.offset + directory.size)
    return _parse_directory(data, directory.entries)


def _find_directory(storage: RangeReader, url: str, size: int, tail: bytes, tail_start: int) -> _Directory:
    at = _eocd_position(tail)
    if at is None:
        raise _no_eocd(storage, url, size, tail, tail_start)
    _, disk, directory_disk, _, entries, dir_size, dir_offset, _ = _EOCD.unpack_from(tail, at)
    record_at = at  # where the record that describes the directory starts (the ZIP64 one if any)
    locator_at = at - _ZIP64_LOCATOR.size
    if locator_at >= 0 and tail[locator_at : locator_at + 4] == _ZIP64_LOCATOR_SIG:
        _, _, _, disks = _ZIP64_LOCATOR.unpack_from(tail, locator_at)
        # As zipfile does: the ZIP64 record is the 56 bytes right before its locator.
        record_at = locator_at - _ZIP64_EOCD.size
        if record_at < 0 or tail[record_at : record_at + 4] != _ZIP64_EOCD_SIG:
            raise InvalidInputError(
                "The dataset zip's ZIP64 end record is missing or damaged; re-create the zip and upload it "
                "again"
            )
        fields = _ZIP64_EOCD.unpack_from(tail, record_at)
        disk, directory_disk, entries, dir_size, dir_offset = fields[4], fields[5], *fields[7:10]
        if disks > 1:
            disk = disks - 1
    if disk != 0 or directory_disk != 0:
        raise InvalidInputError(
            "The dataset zip is one part of a multi-part (split) archive; join the parts into one .zip"
        )
    if dir_size > MAX_DIRECTORY_BYTES:
        raise InvalidInputError(
            f"The dataset zip's central directory declares {dir_size:,} bytes, more than any dataset needs "
            f"({MAX_DIRECTORY_BYTES:,}); the zip is damaged: re-create it and upload it again"
        )
    if dir_size < entries * _ENTRY.size:
        raise InvalidInputError(
            f"The dataset zip's central directory declares {entries:,} members in {dir_size:,} bytes, too "
            "few for them; the zip is damaged: re-create it and upload it again"
        )
    # Bytes before the zip (a self-extractor's stub) shift every offset; bytes missing before the directory
    # (a transfer that lost a part) shift it the other way, which no zip can be read past.
    shift = tail_start + record_at - dir_size - dir_offset
    if shift < 0:
        raise InvalidInputError(
            f"The dataset zip is cut off: {size:,} of {size - shift:,} bytes; upload the whole file again"
        )
    return _Directory(offset=dir_offset + shift, size=dir_size, entries=entries)


def _eocd_position(tail: bytes) -> int | None:
    """Where the EOCD starts in `tail`: the last signature whose record ends the object (comment included),
    else, as zipfile accepts, the last one with room for its fixed part."""
    fallback = None
    at = len(tail)
    floor = max(0, len(tail) - _EOCD.size - _MAX_COMMENT)
    while (at := tail.rfind(_EOCD_SIG, floor, at)) >= 0:
        if at + _EOCD.size <= len(tail):
            comment = _EOCD.unpack_from(tail, at)[-1]
            if at + _EOCD.size + comment == len(tail):
                return at
            fallback = at if fallback is None else fallback
    return fallback


def _no_eocd(storage: RangeReader, url: str, size: int, tail: bytes, tail_start: int) -> InvalidInputError:
    """Why there is no EOCD: an empty object, a zip whose end is missing, or no zip at all."""
    if size == 0:
        return InvalidInputError("The dataset object is empty (0 bytes); upload the dataset's .zip again")
    head = tail[:4] if tail_start == 0 else storage.read_range(url, 0, 4)
    if head == _LOCAL_HEADER_SIG:
        return InvalidInputError(
            f"The dataset zip is cut off: its end, which lists the members, is missing from the {size:,} "
            "bytes there are; upload the whole file again"
        )
    return InvalidInputError(
        f"The dataset file is not a zip archive ({size:,} bytes); upload a .zip with train/, val/ and test/ "
        "folders"
    )


def _parse_directory(data: bytes, entries: int) -> list[Member]:
    members: list[Member] = []
    at = 0
    while at + _ENTRY.size <= len(data):
        fields = _ENTRY.unpack_from(data, at)
        if fields[0] != _ENTRY_SIG:
            break
        flags, compressed, size = fields[3], fields[8], fields[9]
        name_len, extra_len, comment_len = fields[10], fields[11], fields[12]
        name_at = at + _ENTRY.size
        extra_at = name_at + name_len
        at = extra_at + extra_len + comment_len
        if at > len(data):
            break
        raw = data[name_at:extra_at]
        extras = _extras(data[extra_at : extra_at + extra_len]) if extra_len else {}
        if _ZIP64_EXTRA in extras:
            compressed, size = _zip64_sizes(extras[_ZIP64_EXTRA], compressed, size)
        name = _name(raw, flags, extras.get(_UNICODE_PATH_EXTRA))
        members.append(Member(name, size, compressed, name.endswith("/")))
    # The declared count is not checked: writers without ZIP64 store it modulo 65,536 (zipfile ignores it
    # too); every byte of the directory being a whole entry is what says it was read right.
    if at != len(data):
        raise InvalidInputError(
            f"The dataset zip's central directory is damaged (member {len(members) + 1:,} of about "
            f"{entries:,} cannot be read); re-create the zip and upload it again"
        )
    return members


def _extras(data: bytes) -> dict[int, bytes]:
    """The extra fields of one member, by header id."""
    found: dict[int, bytes] = {}
    at = 0
    while at + 4 <= len(data):
        header, length = struct.unpack_from("<2H", data, at)
        found.setdefault(header, data[at + 4 : at + 4 + length])
        at += 4 + length
    return found


def _zip64_sizes(extra: bytes, compressed: int, size: int) -> tuple[int, int]:
    """The real sizes where the 32-bit fields say 0xFFFFFFFF: the ZIP64 extra holds them, the uncompressed
    size first (APPNOTE 4.5.3)."""
    values = [v for (v,) in struct.iter_unpack("<Q", extra[: len(extra) - len(extra) % 8])]
    if size == 0xFFFFFFFF and values:
        size = values.pop(0)
    if compressed == 0xFFFFFFFF and values:
        compressed = values.pop(0)
    return compressed, size


def _name(raw: bytes, flags: int, unicode_path: bytes | None) -> str:
    """The member's '/'-separated path: UTF-8 when the flag says so, the Info-ZIP Unicode Path field when
    it belongs to this name, else what names.py makes of bytes in an unknown encoding."""
    if not flags & UTF8_FLAG and unicode_path is not None and _unicode_path_matches(unicode_path, raw):
        name = unicode_path[5:].decode("utf-8", errors="replace")
    elif raw.isascii():  # every encoding names.py weighs reads ASCII alike: the common case, kept cheap
        name = raw.decode("ascii")
    else:
        name = decode_member_name(raw, flags)
    return name.split("\x00", 1)[0].replace("\\", "/")


def _unicode_path_matches(field: bytes, raw: bytes) -> bool:
    return len(field) > 5 and field[0] == 1 and struct.unpack_from("<L", field, 1)[0] == zlib.crc32(raw)
