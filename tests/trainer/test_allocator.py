"""The trainer's malloc tuning, observed through glibc's own accounting in a fresh process."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import seed_project
from tests.test_cli import cli
from training_agent.core.records.sqlite import SQLiteRecords
from training_agent.trainer.allocator import MMAP_THRESHOLD_BYTES

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only"
)

# Allocates one block of each size, records whether glibc served it with its own mmap (mallinfo2's hblks),
# frees it, and reports how much heap the process still holds (arena).
PROBE = """
import ctypes, json, sys
from training_agent.trainer.allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
applied = keep_freed_memory() if sys.argv[1] == "tuned" else None
report = {"applied": applied}
for size in map(int, sys.argv[2:]):
    before = libc.mallinfo2().hblks
    block = libc.malloc(size)
    report[size] = {"mmapped": libc.mallinfo2().hblks - before}
    libc.free(block)
    report[size]["heap_after_free"] = libc.mallinfo2().arena
print(json.dumps(report))
"""

MEDIUM = 24 * 1024**2  # an activation-sized block under the cap
LARGE = 2 * MMAP_THRESHOLD_BYTES


def probe(mode: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode, str(MEDIUM), str(LARGE)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_glibc_default_maps_and_unmaps_large_blocks() -> None:
    # The behaviour the tuning exists to change: every activation-sized block is a fresh mmap.
    report = probe("default")
    assert report[str(MEDIUM)]["mmapped"] == 1


def test_tuned_process_keeps_activation_sized_blocks_in_its_heap() -> None:
    report = probe("tuned")
    assert report["applied"] is True
    medium = report[str(MEDIUM)]
    assert medium["mmapped"] == 0
    assert medium["heap_after_free"] >= MEDIUM  # freed, but kept for the next step
    # Above glibc's 32 MiB cap a block is still mmapped, and so goes back to the kernel when freed.
    assert report[str(LARGE)]["mmapped"] == 1


def test_train_command_applies_it_unless_turned_off(tmp_path: Path) -> None:
    # Projects the trainer takes (a missing project is refused before any of its set-up), whose runs then
    # fail fast: their dataset is not there.
    records = SQLiteRecords(tmp_path / "data" / "records.db")
    first, second = (seed_project(records, str(tmp_path / "missing.zip")) for _ in range(2))
    on = cli(tmp_path, "train", "--project-id", str(first.id), env={"LOG_LEVEL": "DEBUG"})
    assert "malloc keeps freed memory for reuse" in on.stderr
    off = cli(
        tmp_path,
        "train",
        "--project-id",
        str(second.id),
        env={"LOG_LEVEL": "DEBUG", "TRAINING_AGENT_MALLOC_TUNING": "false"},
    )
    assert "malloc" not in off.stderr and off.returncode == on.returncode != 0
