"""Builders for dataset zips, valid and deliberately broken, for the trainer's tests."""

from __future__ import annotations

import io
import stat
import zipfile
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from training_agent.synthetic import write_shapes_zip

Member = tuple[str, bytes]


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def layout_members(
    classes: Iterable[str] = ("cat", "dog"),
    splits: Iterable[str] = ("train", "val", "test"),
    per_class: int = 3,
    prefix: str = "",
) -> list[Member]:
    """PNG members for each split/class, coloured by class so a model can tell them apart."""
    palette = [(220, 40, 40), (40, 200, 40), (40, 40, 220), (220, 220, 40)]
    members = []
    for split in splits:
        for c, name in enumerate(classes):
            for i in range(per_class):
                members.append((f"{prefix}{split}/{name}/{i}.png", png_bytes(palette[c % len(palette)])))
    return members


class DatasetFactory:
    """Writes zips into one folder and returns their paths."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._count = 0

    def _path(self, name: str | None) -> Path:
        self._count += 1
        return self.folder / (name or f"dataset-{self._count}.zip")

    def shapes(
        self, *, classes: int = 2, per_class: tuple[int, int, int] = (8, 4, 4), size: int = 16
    ) -> Path:
        return write_shapes_zip(self._path(None), classes=classes, per_class=per_class, image_size=size)

    def zip(self, members: Iterable[Member], *, name: str | None = None) -> Path:
        path = self._path(name)
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for member, data in members:
                zf.writestr(member, data)
        return path

    def with_symlink(self) -> Path:
        path = self._path(None)
        with zipfile.ZipFile(path, "w") as zf:
            for member, data in layout_members():
                zf.writestr(member, data)
            info = zipfile.ZipInfo("train/cat/link.png")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
        return path

    def bomb(self, *, megabytes: int = 64) -> Path:
        """A few KB that expand to `megabytes` MB of zeros."""
        return self.zip([*layout_members(), ("train/cat/huge.png", b"\0" * (megabytes * 1024 * 1024))])

    def not_a_zip(self) -> Path:
        path = self._path("dataset.zip")
        path.write_bytes(b"this is not a zip archive at all\n" * 10)
        return path
