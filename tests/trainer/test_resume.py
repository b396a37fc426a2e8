"""Kill the trainer mid-run, start it again: it finishes from its checkpoint with the same total epochs.

The trainer runs as the child process a Kubernetes Job (or the local executor) runs; SIGTERM is what a
preemption or node drain sends, SIGKILL what follows when the grace period is over.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import seed_project
from tests.support.datasets import DatasetFactory
from training_agent.core.records import Project
from training_agent.core.records.sqlite import SQLiteRecords
from training_agent.synthetic import write_shapes_zip

EPOCHS = 4  # stopped after epoch 2: two epochs before the kill, two after


def start(tmp_path: Path, project: Project, *, claimed: bool) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "TRAINING_AGENT_DATA_DIR": str(tmp_path / "data"),
        "TRAINING_AGENT_WORK_DIR": str(tmp_path / "work"),
        "TRAINING_AGENT_NUM_WORKERS": "0",
        "TRAINING_AGENT_DEVICE": "cpu",
    }
    command = [sys.executable, "-m", "training_agent", "train", "--project-id", str(project.id)]
    proc = subprocess.Popen(
        [*command, "--claimed"] if claimed else command,
        env=env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    STARTED.append(proc)
    return proc


@pytest.fixture(autouse=True)
def no_stray_trainers() -> Iterator[list[subprocess.Popen[str]]]:
    """A failed assertion must not leave a trainer running (and using the CPU) after its test."""
    yield STARTED
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


STARTED: list[subprocess.Popen[str]] = []


def wait_for_log(records: SQLiteRecords, project: Project, prefix: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any(log.message.startswith(prefix) for log in records.recent_logs(project.id, limit=200)):
            return
        assert proc.poll() is None, f"the trainer ended early: {proc.stderr.read() if proc.stderr else ''}"
        time.sleep(0.05)
    raise AssertionError(f"no log starting with {prefix!r}")


@pytest.mark.slow
def test_killed_trainer_resumes_from_its_checkpoint(tmp_path: Path, datasets: DatasetFactory) -> None:
    """SIGKILL (the grace period is over): no last checkpoint, the retry resumes from the last epoch's.
    SIGTERM then a retry, at every step, is tests/faults/test_trainer_faults.py's drill."""
    records = SQLiteRecords(tmp_path / "data" / "records.db")
    dataset = write_shapes_zip(tmp_path / "shapes.zip", classes=3, per_class=(40, 8, 8), image_size=32)
    metadata = {"epochs": EPOCHS, "image_size": 32, "batch_size": 8, "seed": 3}
    project = seed_project(records, str(dataset), metadata=metadata)
    first = start(tmp_path, project, claimed=False)
    wait_for_log(records, project, f"Epoch 2/{EPOCHS}", first)
    run_id = records.get_project(project.id).metadata["training_run"]["run_id"]  # type: ignore[union-attr]
    checkpoints = tmp_path / "data" / "bucket" / "checkpoints"
    checkpoint = checkpoints / f"tr-{project.id}" / run_id / "checkpoint.pt"
    first.send_signal(signal.SIGKILL)
    assert first.wait(timeout=60) == -signal.SIGKILL
    assert records.get_project(project.id).status == "training"  # type: ignore[union-attr]
    assert checkpoint.is_file()

    second = start(tmp_path, project, claimed=True)  # what the Job's next pod runs
    assert second.wait(timeout=300) == 0, second.stderr.read() if second.stderr else ""

    assert records.get_project(project.id).status == "pending_evaluation"  # type: ignore[union-attr]
    [resumed] = [log for log in records.recent_logs(project.id) if log.message.startswith("Resuming from")]
    assert resumed.metadata["epochs_done"] >= 2  # the work before the kill was kept
    [model] = records.list_models(project.id)
    assert [h["epoch"] for h in model.metadata["history"]] == list(range(1, EPOCHS + 1))
    assert model.metadata["epochs_run"] == EPOCHS
    assert not checkpoint.exists()  # removed once the model is recorded
    assert not checkpoints.exists()  # and no empty folders left
    assert model.metadata["attempt"] == 2 and model.metadata["run_id"] == run_id
