"""Member names of zips written without the UTF-8 flag (bit 11 of the general-purpose flags).

The zip format's legacy encoding is IBM code page 437, but archivers write whatever their system uses:
macOS's Archive Utility, Java's and many scripts write UTF-8 without setting the flag, Windows with a
Chinese or Japanese locale writes GBK or Shift-JIS. Read in the wrong code page, `猫/1.jpg` becomes
`τîê/1.jpg` and class names stop matching between splits. So the raw bytes are read, in this order, as:

1. UTF-8, when they are valid UTF-8 (for non-ASCII text a chance match is unlikely; where it happens, a
   Chinese or Japanese pair reads as one Latin letter, so step 2 is tried on UTF-8 that is only Latin);
2. Shift-JIS or GBK, when they decode cleanly into a plausible Japanese or Chinese name: CJK characters
   among ASCII, at least one of them in everyday use (kana, JIS level 1 kanji, GB2312 hanzi), and none
   right beside a Latin letter (a Western name misread gives such mixtures: `château` → `chツeau`);
3. code page 437 otherwise, which decodes any bytes.

Python's zipfile has already decoded a name without the flag as cp437 (`ZipInfo.orig_filename`); encoding
it back to cp437 recovers the bytes exactly.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Callable

UTF8_FLAG = 0x800
UNICODE_PATH_EXTRA = 0x7075  # Info-ZIP: a UTF-8 copy of a name stored in a legacy code page


def decode_member_name(info_or_raw: zipfile.ZipInfo | bytes, flag_bits: int = 0) -> str:
    """The member's name as its writer meant it. `info_or_raw` is zipfile's ZipInfo (its own flag bits and
    Info-ZIP Unicode Path field are used) or the name's raw bytes from a central directory, with that
    entry's `flag_bits`."""
    if isinstance(info_or_raw, zipfile.ZipInfo):
        info = info_or_raw
        if info.flag_bits & UTF8_FLAG:
            return info.orig_filename
        try:
            raw = info.orig_filename.encode("cp437")
        except UnicodeEncodeError:  # decoded by zipfile with another metadata_encoding: keep its reading
            return info.orig_filename
        unicode_path = _unicode_path(info.extra, raw)
        if unicode_path is not None:
            return unicode_path
    else:
        raw = info_or_raw
        if flag_bits & UTF8_FLAG:
            return raw.decode("utf-8", errors="replace")
    return decode_legacy(raw)


def _unicode_path(extra: bytes, raw: bytes) -> str | None:
    """The Info-ZIP Unicode Path field's name, when the field is there and belongs to these raw bytes."""
    at = 0
    while at + 4 <= len(extra):
        header, length = struct.unpack_from("<2H", extra, at)
        field = extra[at + 4 : at + 4 + length]
        at += 4 + length
        ours = len(field) > 5 and field[0] == 1 and struct.unpack_from("<L", field, 1)[0] == zlib.crc32(raw)
        if header == UNICODE_PATH_EXTRA and ours:
            return field[5:].decode("utf-8", errors="replace")
    return None


def decode_legacy(raw: bytes) -> str:
    """Bytes of unknown encoding → text, by the rules in the module's docstring."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    # A GBK or Shift-JIS pair can happen to be valid UTF-8 for a Latin letter (猫 in GBK reads as è): when
    # the UTF-8 reading has no more than Latin letters, a plausible CJK reading wins.
    if text is not None and all(ord(c) < 0x250 for c in text):
        cjk = _east_asian(raw) if not text.isascii() else None
        return cjk if cjk is not None else text
    if text is not None:
        return text
    cjk = _east_asian(raw)
    return cjk if cjk is not None else raw.decode("cp437")


def _east_asian(raw: bytes) -> str | None:
    """The Shift-JIS or GBK reading of `raw` when it is a plausible name, else None."""
    for encoding, common in (("shift_jis", _common_japanese), ("gbk", _common_chinese)):
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        if _plausible(text, common):
            return text
    return None


def _plausible(text: str, common: Callable[[str], bool]) -> bool:
    """Only ASCII and CJK characters, at least one of them a common one, and none touching a Latin letter:
    a Latin name read in the wrong code page gives exactly such a mixture (`château` → `chツeau`)."""
    found = False
    for i, c in enumerate(text):
        if ord(c) < 0x80:
            continue
        if not _is_cjk(c):
            return False
        neighbours = text[i - 1 : i] + text[i + 1 : i + 2]
        if any(n.isascii() and n.isalpha() for n in neighbours):
            return False
        found = found or common(c)
    return found


def _common_japanese(c: str) -> bool:
    """Kana, or a kanji of JIS level 1 (the 2,965 in everyday use: Shift-JIS 0x889F-0x9872)."""
    if "\u3040" <= c <= "\u30ff":
        return True
    code = int.from_bytes(c.encode("shift_jis"), "big")
    return 0x889F <= code <= 0x9872


def _common_chinese(c: str) -> bool:
    """A hanzi of GB2312 (the 6,763 in everyday use), which GBK extends with rarer ones."""
    try:
        encoded = c.encode("gb2312")
    except UnicodeEncodeError:
        return False
    return len(encoded) == 2 and encoded[0] >= 0xB0


def _is_cjk(c: str) -> bool:
    code = ord(c)
    return (
        0x3000 <= code <= 0x30FF  # CJK punctuation, hiragana, katakana
        or 0x3400 <= code <= 0x4DBF  # CJK extension A
        or 0x4E00 <= code <= 0x9FFF  # CJK unified ideographs
        or 0xF900 <= code <= 0xFAFF  # CJK compatibility ideographs
        or 0xFF01 <= code <= 0xFF60  # full-width forms (not the half-width katakana after them)
    )
