"""Until the trainer trains data-parallel, a torchrun launch (what the controller starts for several GPUs or
nodes) trains on rank 0 alone: the other ranks leave cleanly, and the run claims, publishes and records
exactly once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_settings, seed_project
from tests.support.datasets import DatasetFactory
from training_agent.core.records.sqlite import SQLiteRecords
from training_agent.trainer.ranks import Place, place


def test_place_reads_torchrun_and_defaults_to_a_lone_process() -> None:
    assert place({}) == Place()
    assert place({"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}) == Place(1, 1, 2)
    assert not place({"RANK": "1", "WORLD_SIZE": "2"}).trains
    assert place({"RANK": "0", "WORLD_SIZE": "4"}).trains
    # Strays outside torchrun never stop a plain trainer.
    for stray in ({"RANK": "3"}, {"RANK": "x", "WORLD_SIZE": "2"}, {"RANK": "5", "WORLD_SIZE": "2"}):
        assert place(stray).trains, stray


@pytest.mark.slow
def test_a_two_process_torchrun_trains_once(tmp_path: Path, datasets: DatasetFactory) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun, "torchrun comes with torch (the trainer extra)"
    settings = make_settings(tmp_path)
    records = SQLiteRecords(settings.resolved_database_path)
    project = seed_project(records, str(datasets.shapes()))
    env = {
        **os.environ,
        "TRAINING_AGENT_DATA_DIR": str(settings.data_dir),
        "TRAINING_AGENT_WORK_DIR": str(settings.work_dir),
        "TRAINING_AGENT_NUM_WORKERS": "0",
        "TRAINING_AGENT_DEVICE": "cpu",
        "OMP_NUM_THREADS": "1",
    }
    command = [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "training_agent", "train"]
    done = subprocess.run(
        [*command, "--project-id", str(project.id), "--no-progress-bar"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Rank 1 of 2 leaves" in done.stderr
    assert records.get_project(project.id).status == "pending_evaluation"  # type: ignore[union-attr]
    assert len(records.list_models(project.id)) == 1
    uploaded = list((settings.data_dir / "bucket" / "models").glob("*.pth"))
    assert len(uploaded) == 1
