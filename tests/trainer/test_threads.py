"""The trainer's compute threads: the CPUs it may use, shared by its machine's trainer processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from training_agent.core.settings import compute_threads, cpu_count
from training_agent.trainer.placement import place
from training_agent.trainer.threads import set_compute_threads


def test_the_setting_wins_then_omp_then_the_cpus_shared_by_local_processes() -> None:
    assert compute_threads(3, {"OMP_NUM_THREADS": "1"}, cpus=16, local_processes=1) == 3
    assert compute_threads(0, {"OMP_NUM_THREADS": "2"}, cpus=16, local_processes=1) is None  # torch read it
    assert compute_threads(0, {}, cpus=16, local_processes=1) == 16
    assert compute_threads(0, {}, cpus=16, local_processes=4) == 4  # four torchrun processes here
    assert compute_threads(0, {}, cpus=4, local_processes=8) == 1


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        ("max 100000\n", "mask"),  # no limit
        ("150000 100000\n", 1),  # a pod limit of 1.5 CPUs: one whole thread
        ("20000 100000\n", 1),  # under one CPU: still one
        ("not a quota\n", "mask"),
        (None, "mask"),  # no cgroup v2
    ],
)
def test_a_cgroup_quota_caps_the_cpus(tmp_path: Path, cpu_max: str | None, expected: object) -> None:
    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max)
    mask = len(os.sched_getaffinity(0))
    assert cpu_count(path) == (mask if expected == "mask" else min(mask, int(str(expected))))


@pytest.fixture
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("restore_threads")
def test_set_compute_threads_applies_the_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set_compute_threads(2, local_processes=1) == 2 == torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert set_compute_threads(0, local_processes=1) == cpu_count()


def test_the_local_processes_come_from_torchruns_place() -> None:
    # A malformed torchrun environment is a lone process (place() already guards it), never a traceback.
    assert place({}).local_processes == 1
    assert place({"WORLD_SIZE": "8", "RANK": "3", "GROUP_WORLD_SIZE": "2"}).local_processes == 4
    assert place({"WORLD_SIZE": "two", "LOCAL_WORLD_SIZE": "x"}).local_processes == 1
