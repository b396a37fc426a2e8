"""The zip listing read from the object's end by ranged reads: the same members as zipfile's own listing,
from the local bucket and from gcp-storage-emulator (real google-cloud-storage ranged GETs), in a handful of
requests whatever the zip's size; and the refusals, each one sentence."""

from __future__ import annotations

import io
import re
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage as gcs

from tests.conftest import make_settings
from training_agent.core.datasets.listing import TAIL_BYTES, list_zip_members
from training_agent.core.datasets.members import Member
from training_agent.core.errors import InvalidInputError, ObjectNotFoundError
from training_agent.core.storage import ObjectInfo, ObjectStorage

BUCKET = "listing-test-bucket"


@dataclass
class CountingStorage:
    """ObjectStorage with every ranged read counted: the listing's cost in requests."""

    storage: ObjectStorage
    ranges: list[tuple[int, int]] = field(default_factory=list)

    def stat(self, url: str) -> ObjectInfo | None:
        return self.storage.stat(url)

    def read_range(self, url: str, start: int, end: int) -> bytes:
        self.ranges.append((start, end))
        return self.storage.read_range(url, start, end)


Put = Callable[[bytes], str]  # stores a zip's bytes as an object and returns its URL


@dataclass
class Bucket:
    storage: CountingStorage
    put: Put


def _local_bucket(tmp_path: Path) -> Bucket:
    storage = ObjectStorage(make_settings(tmp_path))
    folder = tmp_path / "bucket" / "datasets"
    folder.mkdir(parents=True)

    def put(data: bytes) -> str:
        path = folder / "dataset.zip"
        path.write_bytes(data)
        return path.as_uri()

    return Bucket(CountingStorage(storage), put)


def _gcs_bucket(tmp_path: Path, emulator: str, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator)
    client = gcs.Client(project="test", credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    if client.lookup_bucket(BUCKET) is None:
        client.create_bucket(BUCKET)
    storage = ObjectStorage(make_settings(tmp_path, GCP_BUCKET_NAME=BUCKET))

    def put(data: bytes) -> str:
        source = tmp_path / "upload.zip"
        source.write_bytes(data)
        url = f"gs://{BUCKET}/datasets/dataset.zip"
        storage.upload(source, url)
        return url

    return Bucket(CountingStorage(storage), put)


@pytest.fixture(params=["local", pytest.param("gcs", marks=pytest.mark.integration)])
def bucket(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Bucket]:
    if request.param == "local":
        yield _local_bucket(tmp_path)
    else:
        yield _gcs_bucket(tmp_path, request.getfixturevalue("gcs_emulator"), monkeypatch)


def _zip(
    members: list[tuple[str | zipfile.ZipInfo, bytes]], *, compression: int = zipfile.ZIP_DEFLATED
) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buffer.getvalue()


def _layout(per_class: int = 3, size: int = 300) -> list[tuple[str | zipfile.ZipInfo, bytes]]:
    members: list[tuple[str | zipfile.ZipInfo, bytes]] = [(zipfile.ZipInfo("train/"), b"")]
    for split in ("train", "val", "test"):
        for label in ("cat", "café"):  # a non-ASCII name: zipfile sets the UTF-8 flag for it
            members += [(f"{split}/{label}/{i}.png", bytes([i % 251]) * size) for i in range(per_class)]
    return members


def _zipfile_listing(data: bytes) -> list[Member]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [Member(i.filename, i.file_size, i.compress_size, i.is_dir()) for i in zf.infolist()]


def _listed(bucket: Bucket, data: bytes) -> list[Member]:
    return list_zip_members(bucket.storage, bucket.put(data))


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_lists_what_zipfile_lists_in_one_read(bucket: Bucket, compression: int) -> None:
    data = _zip(_layout(), compression=compression)
    members = _listed(bucket, data)
    assert members == _zipfile_listing(data)
    assert (
        Member(
            "val/café/2.png",
            300,
            300 if compression == zipfile.ZIP_STORED else members[-1].compressed_size,
            False,
        )
        in members
    )
    assert members[0] == Member("train/", 0, 0, True)
    assert len(bucket.storage.ranges) == 1  # the tail holds the EOCD and the whole directory


def test_zip64_records_and_extras(bucket: Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real ZIP64 archive needs more than 4 GiB or 65,535 members, and force_zip64 only touches the local
    # headers. So zipfile's own thresholds are lowered while it writes: every member then gets a ZIP64 extra
    # with 0xFFFFFFFF in its 32-bit fields, and the archive a ZIP64 EOCD record and locator; the EOCD's own
    # fields are then set to the 0xFFFF/0xFFFFFFFF markers a big archive carries, so only the ZIP64 record
    # says where the directory is.
    with monkeypatch.context() as patch:
        patch.setattr(zipfile, "ZIP64_LIMIT", 100)
        patch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 5)
        data = bytearray(_zip(_layout(size=400), compression=zipfile.ZIP_STORED))
    eocd = data.rindex(b"PK\x05\x06")
    assert data[eocd - 20 : eocd - 16] == b"PK\x06\x07"
    struct.pack_into("<4H2L", data, eocd + 4, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
    members = _listed(bucket, bytes(data))
    assert members == _zipfile_listing(bytes(data))
    assert Member("test/cat/0.png", 400, 400, False) in members
    assert len(bucket.storage.ranges) == 1


def test_a_directory_bigger_than_the_tail_costs_one_more_read(bucket: Bucket) -> None:
    long = "x" * 200
    data = _zip([(f"train/{long}/{i}.png", b"") for i in range(3000)], compression=zipfile.ZIP_STORED)
    assert len(data) > TAIL_BYTES
    members = _listed(bucket, data)
    assert members == _zipfile_listing(data)
    assert len(bucket.storage.ranges) == 2


def test_bytes_before_the_zip_and_a_comment(bucket: Bucket) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, content in _layout():
            zf.writestr(name, content)
        zf.comment = b"made by hand " * 100
    data = b"#!/bin/sh\necho a self-extractor's stub\n" * 50 + buffer.getvalue()
    assert _listed(bucket, data) == _zipfile_listing(data)


def _without_utf8_flag(data: bytes, name: bytes, replace: tuple[bytes, bytes] = (b"", b"")) -> bytes:
    """The zip with the central directory entry of `name` rewritten as a legacy archiver writes it: the
    UTF-8 flag cleared and, if asked, some of the name's bytes replaced (same length)."""
    out = bytearray(data)
    at = out.rindex(name)  # the central directory's copy (the local header's comes first)
    entry = out.rindex(b"PK\x01\x02", 0, at)
    flags = struct.unpack_from("<H", out, entry + 8)[0]
    struct.pack_into("<H", out, entry + 8, flags & ~0x800)
    out[at : at + len(name)] = name.replace(*replace)
    return bytes(out)


@pytest.mark.parametrize(
    ("written", "replace", "expected"),
    [
        # UTF-8 bytes without the flag (macOS Archive Utility, Java): zipfile would read them as cp437.
        ("train/猫/1.png", (b"", b""), "train/猫/1.png"),
        # cp437 from an old Windows archiver: 0x82 is "é".
        ("train/cat/1.png", (b"cat", b"c\x82t"), "train/cét/1.png"),
    ],
)
def test_legacy_names_without_the_utf8_flag(
    bucket: Bucket, written: str, replace: tuple[bytes, bytes], expected: str
) -> None:
    data = _without_utf8_flag(_zip([(written, b"x")]), written.encode(), replace)
    assert [m.name for m in _listed(bucket, data)] == [expected]


def test_the_info_zip_unicode_path_field_names_a_legacy_member(bucket: Bucket) -> None:
    # Info-ZIP writes a stand-in name in the legacy field ("?" for what the code page lacks) and the real
    # one, in UTF-8, in extra field 0x7075, tied to the stand-in by its CRC-32.
    info = zipfile.ZipInfo("train/?/1.png")
    real = "train/猫/1.png".encode()
    payload = b"\x01" + struct.pack("<L", zlib.crc32(info.filename.encode())) + real
    info.extra = struct.pack("<2H", 0x7075, len(payload)) + payload
    stale = zipfile.ZipInfo("train/?/2.png")
    stale.extra = info.extra  # a field whose CRC is another name's is not this member's
    data = _zip([(info, b"x"), (stale, b"y")])
    assert [m.name for m in _listed(bucket, data)] == ["train/猫/1.png", "train/?/2.png"]


def _message(bucket: Bucket, data: bytes) -> str:
    with pytest.raises(InvalidInputError) as caught:
        _listed(bucket, data)
    assert len(bucket.storage.ranges) <= 4
    message = str(caught.value)
    assert message.count(". ") == 0 and "/tmp" not in message  # one sentence, no machine path
    return message


def test_a_zip_that_lost_bytes_before_its_directory_is_cut_off(bucket: Bucket) -> None:
    whole = _zip(_layout(), compression=zipfile.ZIP_STORED)
    data = whole[:100] + whole[1100:]  # a transfer that dropped 1,000 bytes of member data
    message = _message(bucket, data)
    assert message == (
        f"The dataset zip is cut off: {len(data):,} of {len(whole):,} bytes; upload the whole file again"
    )


def test_a_zip_whose_end_is_missing_is_cut_off(bucket: Bucket) -> None:
    whole = _zip(_layout(), compression=zipfile.ZIP_STORED)
    message = _message(bucket, whole[: len(whole) // 2])
    assert message.startswith("The dataset zip is cut off: its end, which lists the members, is missing")


def test_a_big_zip_whose_end_is_missing_reads_its_first_bytes(bucket: Bucket) -> None:
    whole = _zip([(f"train/cat/{i}.png", bytes(4096)) for i in range(200)], compression=zipfile.ZIP_STORED)
    cut = whole[: TAIL_BYTES + 10_000]
    message = _message(bucket, cut)
    assert "cut off" in message
    assert bucket.storage.ranges[-1] == (0, 4)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"<html>not found</html>\n" * 40, "The dataset file is not a zip archive (920 bytes)"),
        (b"", "The dataset object is empty (0 bytes)"),
    ],
)
def test_not_a_zip(bucket: Bucket, data: bytes, expected: str) -> None:
    assert _message(bucket, data).startswith(expected)


def test_an_absurd_directory_size_is_refused_before_it_is_read(bucket: Bucket) -> None:
    data = bytearray(_zip(_layout()))
    eocd = data.rindex(b"PK\x05\x06")
    struct.pack_into("<L", data, eocd + 12, 0xFFFFFF00)
    message = _message(bucket, bytes(data))
    assert re.match(r"The dataset zip's central directory declares 4,294,967,040 bytes", message)
    assert len(bucket.storage.ranges) == 1


def test_a_damaged_directory_is_refused(bucket: Bucket) -> None:
    data = bytearray(_zip(_layout()))
    entry = data.index(b"PK\x01\x02")
    data[entry : entry + 4] = b"XXXX"
    assert "central directory is damaged" in _message(bucket, bytes(data))


def test_a_missing_object(bucket: Bucket) -> None:
    url = bucket.put(_zip(_layout()))
    with pytest.raises(ObjectNotFoundError, match="does not exist"):
        list_zip_members(bucket.storage, url.replace("dataset.zip", "other.zip"))
