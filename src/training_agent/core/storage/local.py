"""A local folder standing in for the bucket (the embedded default).

Like a GCS object, each file has a generation (its mtime in nanoseconds, new with every write) and custom
metadata, kept in a hidden sidecar `.{name}.meta.json` that names the generation it belongs to (a sidecar of
an older generation is ignored). Writes are atomic renames; a create-only write (`if_generation_match=0`) is a
hard link, which fails when the name exists, so two writers can never both create the same object.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from training_agent.core.errors import ObjectNotFoundError, StorageError
from training_agent.core.files import atomic_write
from training_agent.core.storage.objects import ObjectInfo, PreconditionFailedError

_META_SUFFIX = ".meta.json"


def _meta_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{_META_SUFFIX}")


def download(src: Path, dest: Path) -> None:
    if not src.is_file():
        raise ObjectNotFoundError(f"{src} does not exist (or is not a file)")
    try:
        shutil.copyfile(src, dest)
    except OSError as exc:
        raise StorageError(f"Cannot read {src}: {exc}") from exc


def read_range(path: Path, start: int, end: int) -> bytes:
    """Bytes `start` to `end` (exclusive) of the file, by seek and read."""
    try:
        with path.open("rb") as file:
            file.seek(start)
            return file.read(end - start)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
        raise ObjectNotFoundError(f"{path} does not exist (or is not a file)") from exc
    except OSError as exc:
        raise StorageError(f"Cannot read {path}: {exc}") from exc


def stat(path: Path) -> ObjectInfo | None:
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not path.is_file():
        return None
    metadata: dict[str, str] = {}
    try:
        meta = json.loads(_meta_path(path).read_text())
        if meta.get("generation") == st.st_mtime_ns and isinstance(meta.get("metadata"), dict):
            metadata = {str(k): str(v) for k, v in meta["metadata"].items()}
    except (OSError, ValueError):
        pass  # no sidecar (or a stale one): an object without metadata
    return ObjectInfo(generation=st.st_mtime_ns, size=st.st_size, metadata=metadata)


def _check_generation(dest: Path, expected: int) -> None:
    current = stat(dest)
    if current is None or current.generation != expected:
        found = "absent" if current is None else f"generation {current.generation}"
        raise PreconditionFailedError(f"{dest} is {found}, not generation {expected}")


def upload(
    src: Path, dest: Path, *, metadata: dict[str, str] | None = None, if_generation_match: int | None = None
) -> ObjectInfo:
    """Copy `src` to `dest` atomically (readers never see a half-written file) and return what was
    written. `if_generation_match=0` creates only; another number overwrites only that generation."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if if_generation_match == 0:
            part = atomic_write(
                dest.with_name(f".{dest.name}.new-{os.getpid()}"), lambda t: shutil.copyfile(src, t)
            )
            try:
                os.link(part, dest)
            except FileExistsError as exc:
                raise PreconditionFailedError(f"{dest} already exists") from exc
            finally:
                part.unlink(missing_ok=True)
        else:
            if if_generation_match is not None:
                _check_generation(dest, if_generation_match)
            atomic_write(dest, lambda tmp: shutil.copyfile(src, tmp))
        generation = dest.stat().st_mtime_ns
        if metadata:
            atomic_write(
                _meta_path(dest),
                lambda tmp: tmp.write_text(json.dumps({"generation": generation, "metadata": metadata})),
            )
        else:
            _meta_path(dest).unlink(missing_ok=True)
    except OSError as exc:
        raise StorageError(f"Cannot write {dest}: {exc}") from exc
    return ObjectInfo(generation=generation, size=dest.stat().st_size, metadata=dict(metadata or {}))


def exists(path: Path) -> bool:
    return path.is_file()


def delete(path: Path, *, if_generation_match: int | None = None, root: Path | None = None) -> None:
    """Remove the file (and its metadata); with `if_generation_match`, only that generation. Under the
    bucket's `root`, folders that the delete left empty go too (a bucket has no folders of its own)."""
    if if_generation_match is not None:
        current = stat(path)
        if current is None:
            return
        if current.generation != if_generation_match:
            raise PreconditionFailedError(
                f"{path} is generation {current.generation}, not {if_generation_match}"
            )
    path.unlink(missing_ok=True)
    _meta_path(path).unlink(missing_ok=True)
    if root is not None:
        remove_empty_parents(path.parent, root)


def remove_empty_parents(folder: Path, root: Path) -> None:
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): the folders above hold something too
            return
        folder = folder.parent


def list_prefix(prefix: str) -> list[Path]:
    """Every object whose path starts with `prefix` (end it with '/' to list a folder's tree)."""
    folder = Path(prefix) if prefix.endswith(os.sep) else Path(prefix).parent
    return sorted(
        path for path in walk_files(folder) if not path.name.startswith(".") and str(path).startswith(prefix)
    )


def walk_files(folder: Path) -> Iterator[Path]:
    """Every file under `folder`. Another run may delete objects (and their emptied folders) while this
    walks: os.walk skips a folder that vanished, where Path.rglob raises FileNotFoundError."""
    for parent, _, names in os.walk(folder):
        for name in names:
            path = Path(parent, name)
            if path.is_file():
                yield path
