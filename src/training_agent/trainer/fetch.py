"""Download the dataset archive and unpack it safely (Requirements 2 and 3.1).

A dataset zip comes from another agent or a user, so it is untrusted: members may try to escape the target
folder (zip slip), be links, or expand to far more than they weigh (zip bombs). Limits are enforced on what
is actually written, not on what the archive declares.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from training_agent.core.errors import InvalidInputError
from training_agent.core.storage import ObjectStorage

_CHUNK = 1024 * 1024


def download_dataset(storage: ObjectStorage, url: str, dest_dir: Path) -> Path:
    """Fetch the archive at `url` into `dest_dir` and return its path."""
    target = dest_dir / "dataset.zip"
    storage.download(url, target)
    return target


def _member_path(info: zipfile.ZipInfo) -> PurePosixPath:
    """The member's relative path, or InvalidInputError if it could land outside the target folder."""
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in path.parts:
        raise InvalidInputError(
            f"The dataset archive contains an unsafe path {info.filename!r} (absolute or with '..'); "
            "rebuild the zip with paths relative to its root"
        )
    if stat.S_ISLNK(info.external_attr >> 16):
        raise InvalidInputError(
            f"The dataset archive contains a symbolic link {info.filename!r}; links are refused"
        )
    return path


def _check_declared_limits(infos: list[zipfile.ZipInfo], max_bytes: int, max_files: int) -> None:
    if len(infos) > max_files:
        raise InvalidInputError(
            f"The dataset archive has {len(infos):,} members, over the limit of {max_files:,} "
            "(TRAINING_AGENT_MAX_DATASET_FILES)"
        )
    declared = sum(i.file_size for i in infos)
    if declared > max_bytes:
        raise InvalidInputError(
            f"The dataset archive expands to {declared:,} bytes, over the limit of {max_bytes:,} "
            "(TRAINING_AGENT_MAX_DATASET_BYTES)"
        )


def extract_zip(archive: Path, dest: Path, *, max_bytes: int, max_files: int) -> None:
    """Unpack `archive` into `dest`, refusing unsafe members and anything over the limits."""
    if not zipfile.is_zipfile(archive):
        raise InvalidInputError(
            f"The dataset file is not a zip archive ({archive.stat().st_size:,} bytes); "
            "upload a .zip with train/, val/ and test/ folders"
        )
    dest.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            _check_declared_limits(infos, max_bytes, max_files)
            for info in infos:
                relative = _member_path(info)
                target = dest.joinpath(*relative.parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    # Count real output: a forged header can declare a tiny size for a huge member.
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        if written > max_bytes:
                            raise InvalidInputError(
                                f"The dataset archive expands to more than {max_bytes:,} bytes "
                                "(TRAINING_AGENT_MAX_DATASET_BYTES)"
                            )
                        out.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise InvalidInputError(f"The dataset archive is corrupt: {exc}") from exc
    except RuntimeError as exc:  # zipfile raises RuntimeError for encrypted members
        shutil.rmtree(dest, ignore_errors=True)
        raise InvalidInputError(f"The dataset archive cannot be read: {exc}") from exc
    except InvalidInputError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
