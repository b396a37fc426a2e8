"""The local folder bucket's listing while another run deletes: a folder that vanishes mid-walk is skipped,
never a FileNotFoundError (Path.rglob raised one in CI when a run's cleanup removed its checkpoints)."""

from __future__ import annotations

import shutil
from pathlib import Path

from training_agent.core.storage.local import delete, list_prefix, walk_files


def tree(root: Path) -> None:
    for rel in ("a.pth", "runs/one/ckpt.pt", "runs/two/ckpt.pt", ".hidden"):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_a_folder_deleted_during_the_walk_is_skipped(tmp_path: Path) -> None:
    tree(tmp_path)
    files = walk_files(tmp_path)
    first = next(files)  # the walk has listed the root's folders but not yet entered them
    assert first.parent == tmp_path
    shutil.rmtree(tmp_path / "runs")
    assert [p for p in files if "runs" in p.parts] == []


def test_a_missing_folder_lists_nothing(tmp_path: Path) -> None:
    assert list_prefix(f"{tmp_path / 'nothing'}/") == []


def test_list_prefix_lists_files_under_the_prefix_and_skips_hidden_ones(tmp_path: Path) -> None:
    tree(tmp_path)
    listed = [p.relative_to(tmp_path).as_posix() for p in list_prefix(f"{tmp_path}/runs/")]
    assert listed == ["runs/one/ckpt.pt", "runs/two/ckpt.pt"]
    assert [p.name for p in list_prefix(f"{tmp_path}/a")] == ["a.pth"]


def test_delete_removes_the_folders_it_emptied_up_to_the_root(tmp_path: Path) -> None:
    tree(tmp_path)
    delete(tmp_path / "runs/one/ckpt.pt", root=tmp_path)
    assert not (tmp_path / "runs/one").exists()
    assert (tmp_path / "runs/two/ckpt.pt").exists()
