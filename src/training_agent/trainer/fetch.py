"""Download the dataset archive and unpack it safely (Requirements 2 and 3.1).

A dataset zip comes from another agent or a user, so it is untrusted: members may try to escape the target
folder (zip slip), be links, or expand to far more than they weigh (zip bombs). Limits are enforced on what
the directory declares (`core/datasets/rules.py`, the same rules as the control plane's pre-flight) and again
on what is actually written. Only the images of the layout's plan are unpacked, each to
`<dest>/<split>/<class>/...` under the canonical split names, so every later step sees train/val/test
whatever the zip called them; system files and anything else the plan ignores are never written.

Messages name members as the zip lists them, never a folder of this machine.
"""

from __future__ import annotations

import contextlib
import shutil
import stat
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from training_agent.core.datasets import rules
from training_agent.core.datasets.layout import DatasetPlan, plan_layout
from training_agent.core.datasets.listing import list_zip_members
from training_agent.core.datasets.members import Member
from training_agent.core.datasets.names import decode_member_name
from training_agent.core.errors import InvalidInputError, StepError
from training_agent.core.storage import ObjectStorage
from training_agent.core.storage.objects import ObjectInfo

_CHUNK = 1024 * 1024
_ENCRYPTED = 0x1


def download_dataset(storage: ObjectStorage, url: str, dest_dir: Path) -> Path:
    """Fetch the archive at `url` into `dest_dir` and return its path."""
    target = dest_dir / "dataset.zip"
    storage.download(url, target)
    return target


class DatasetZip:
    """An open dataset zip: its members under the names their writer meant (see `core/datasets/names.py`).
    `unwrapped` names the inner zip when the uploaded zip held nothing but that one."""

    def __init__(self, zf: zipfile.ZipFile, unwrapped: str | None = None) -> None:
        self.zf = zf
        self.unwrapped = unwrapped
        self.members: list[Member] = []
        self._infos: dict[str, zipfile.ZipInfo] = {}
        for info in zf.infolist():
            name = decode_member_name(info).split("\x00", 1)[0]
            self.members.append(Member(name, info.file_size, info.compress_size, name.endswith("/")))
            self._infos.setdefault(name, info)

    def info(self, name: str) -> zipfile.ZipInfo:
        return self._infos[name]

    def check(self, *, max_bytes: int, max_files: int, max_ratio: float | None) -> None:
        """Unsafe paths, links, the limits and names that cannot be unpacked, from the directory alone."""
        rules.check_listing(self.members, max_files=max_files, max_bytes=max_bytes, max_ratio=max_ratio)
        for member in self.members:
            if stat.S_ISLNK(self._infos[member.name].external_attr >> 16):
                raise InvalidInputError(
                    f"The dataset archive contains a symbolic link {member.name!r}; links are refused"
                )

    def only_zip(self) -> str | None:
        """The name of the one member when it is a zip and nothing else is there but system files."""
        return rules.only_zip(self.members)


@contextlib.contextmanager
def open_dataset(
    archive: Path, *, max_bytes: int, max_files: int, max_ratio: float | None = None
) -> Iterator[DatasetZip]:
    """The dataset zip at `archive`, checked against the limits; a zip that holds only another zip is
    unwrapped once (the inner zip is written beside `archive` and removed on leaving)."""
    inner = archive.with_name(archive.stem + "-inner.zip")
    dataset = DatasetZip(_open_zip(archive))
    try:
        dataset.check(max_bytes=max_bytes, max_files=max_files, max_ratio=max_ratio)
        nested = dataset.only_zip()
        if nested is not None:
            _write_member(dataset, nested, inner, max_bytes=max_bytes, exclusive=False)
            dataset.zf.close()
            dataset = DatasetZip(_open_zip(inner), unwrapped=nested)
            dataset.check(max_bytes=max_bytes, max_files=max_files, max_ratio=max_ratio)
            again = dataset.only_zip()
            if again is not None:
                raise InvalidInputError(
                    f"The dataset zip holds only another zip ({nested}), which again holds only a zip "
                    f"({again}); upload the zip that holds the train/, val/ and test/ folders"
                )
        yield dataset
    finally:
        dataset.zf.close()
        inner.unlink(missing_ok=True)


def _open_zip(path: Path) -> zipfile.ZipFile:
    """A ZipFile, or the reason it cannot be one: not a zip, empty, cut off (N of M bytes), damaged."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        pass
    else:
        # zipfile reads bytes missing before the directory as bytes prepended to the zip, and shifts every
        # member's offset back: a member before the start of the file means the zip lost a part.
        if all(info.header_offset >= 0 for info in zf.infolist()):
            return zf
        zf.close()
    # The pre-flight's reader of the central directory says precisely what is wrong (cut off: N of M bytes).
    list_zip_members(_LocalFile(path), path.name)
    raise InvalidInputError(
        "The dataset archive is damaged: its list of members cannot be read; re-create the zip and upload it "
        "again"
    )


class _LocalFile:
    """A local file as the `RangeReader` that `list_zip_members` reads."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def stat(self, url: str) -> ObjectInfo | None:
        return ObjectInfo(generation=0, size=self.path.stat().st_size)

    def read_range(self, url: str, start: int, end: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(start)
            return f.read(end - start)


def extract_planned(dataset: DatasetZip, plan: DatasetPlan, dest: Path, *, max_bytes: int) -> None:
    """Unpack the plan's images into `dest/<split>/<class>/...`; on any failure `dest` is removed."""
    dest.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        for name, relative in plan.planned():
            target = dest.joinpath(*relative.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            written = _write_member(dataset, name, target, max_bytes=max_bytes, written=written)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _write_member(
    dataset: DatasetZip, name: str, target: Path, *, max_bytes: int, written: int = 0, exclusive: bool = True
) -> int:
    """Stream one member to `target`, counting real output: a forged header can declare a tiny size for a
    huge member. `written` is what the unpacking wrote before; returns that plus this member's bytes."""
    info = dataset.info(name)
    if info.flag_bits & _ENCRYPTED:
        raise InvalidInputError(
            f"The dataset zip is password-protected ({name} is encrypted); upload it without a password"
        )
    try:
        with dataset.zf.open(info) as src, open(target, "xb" if exclusive else "wb") as out:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                if written > max_bytes:
                    raise InvalidInputError(
                        f"The dataset archive expands to more than {max_bytes:,} bytes "
                        "(TRAINING_AGENT_MAX_DATASET_BYTES)"
                    )
                out.write(chunk)
    except zipfile.BadZipFile as exc:
        why = "its checksum does not match" if "CRC" in str(exc) else "its entry is damaged"
        raise _corrupt(name, why) from exc
    except zlib.error as exc:
        raise _corrupt(name, "its compressed data is damaged") from exc
    except EOFError as exc:
        raise _corrupt(name, "its data ends early") from exc
    except NotImplementedError as exc:  # a compression method zipfile lacks (Deflate64, PPMd, ...)
        raise InvalidInputError(
            f"The dataset zip stores {name} with a compression method that cannot be read here; re-create "
            "the zip with the standard Deflate method (any zip tool's default)"
        ) from exc
    except OSError as exc:  # the disk, not the data: a retry elsewhere may succeed, so not invalid input
        target.unlink(missing_ok=True)
        raise StepError(f"Could not unpack {name}: {exc.strerror or type(exc).__name__}") from exc
    return written


def _corrupt(name: str, why: str) -> InvalidInputError:
    return InvalidInputError(
        f"The dataset archive is corrupt: {name} cannot be unpacked ({why}); re-create the zip and upload it "
        "again"
    )


def extract_zip(
    archive: Path,
    dest: Path,
    *,
    max_bytes: int,
    max_files: int,
    max_ratio: float | None = None,
    allow_missing_val: bool = False,
) -> DatasetPlan:
    """Open, plan and unpack in one call (the trainer's stages do the same steps one by one, to log each)."""
    with open_dataset(archive, max_bytes=max_bytes, max_files=max_files, max_ratio=max_ratio) as dataset:
        plan = plan_layout(
            dataset.members,
            max_files=max_files,
            max_bytes=max_bytes,
            max_ratio=max_ratio,
            allow_missing_val=allow_missing_val,
        )
        extract_planned(dataset, plan, dest, max_bytes=max_bytes)
    return plan
