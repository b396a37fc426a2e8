"""SIGKILL and SIGTERM of a `training-agent train` process at every step of its run.

After each fault the project must be `pending_evaluation` with a loadable model whose row points at it, or
`failed` with the reason, or (SIGTERM: preemption) `training` with a checkpoint that the retry of the same
run resumes — never `training` without a live lease once the reaper has looked; the bystander project's
model (same safe name) is untouched; no work folder or checkpoint of an ended run is left; no duplicate rows.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.faults.conftest import LEASE_S, World
from training_agent.api.executors.local import LocalExecutor
from training_agent.api.reaper import Reaper
from training_agent.core.errors import EXIT_OK, EXIT_RETRY
from training_agent.trainer.checkpoint import checkpoint_key

pytestmark = pytest.mark.faults

# The steps that hold something (the download, the unpacked data, a checkpoint, an upload, a record), plus
# the moments inside steps: after each epoch's row, while a checkpoint is being written, and between the
# models row and the status change. (build_model, prepare_data, evaluate and save hold nothing that
# validate_dataset or epoch:2 do not: each is a step boundary in the same folder.)
KILL_POINTS = [
    "download",
    "extract",
    "validate_dataset",
    "epoch:1",
    "epoch:2",
    "checkpoint:1",
    "upload",
    "verify",
    "record",
    "model_row",
]
# A SIGTERM outside the training loop interrupts at once (the retry starts the step again); inside it, the
# step finishes and a checkpoint is written; from the models row on, it waits for the run to finish.
TERM_POINTS = [
    "download",
    "extract",
    "validate_dataset",
    "epoch:1",
    "checkpoint:1",
    "upload",
    "verify",
    "record",
    "model_row",
]


def reap(world: World) -> list[object]:
    time.sleep(LEASE_S + 0.5)
    executor = LocalExecutor(world.settings, world.records)
    return list(Reaper(world.settings, world.records, executor, world.storage).reap())


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_is_reaped(world: World, point: str) -> None:
    project = world.project()
    assert world.train(project, claimed=False, fault=point, sig="KILL") == -signal.SIGKILL
    # Nobody was there to say it: the run is `training` until its lease runs out, then the reaper fails it
    # and removes what it left (work folder, checkpoint).
    assert reap(world) == [project.id]
    assert world.assert_settled(project) == "failed"
    error = world.records.get_project(project.id).metadata["error"]  # type: ignore[union-attr]
    assert error["message"].startswith("The trainer stopped responding (last heartbeat ")


@pytest.mark.parametrize("point", TERM_POINTS)
def test_sigterm_then_the_retry_finishes(world: World, point: str) -> None:
    project = world.project()
    code = world.train(project, claimed=False, fault=point, sig="TERM")
    if point == "model_row":
        # The model was recorded: the stop waits for the status change and the clean-up, then exits 0.
        assert code == EXIT_OK
        assert world.assert_settled(project) == "pending_evaluation"
        return
    assert code == EXIT_RETRY
    assert world.assert_settled(project, allow_training=True) == "training"
    assert world.train(project, claimed=True) == EXIT_OK  # the retry of the same run (the Job's next pod)
    assert world.assert_settled(project) == "pending_evaluation"
    rows = world.records.recent_logs(project.id, limit=200)
    logs = [log.message for log in rows]
    if point in ("epoch:1", "checkpoint:1"):
        # The first epoch's work was kept: the retry starts at the second.
        assert any(m.startswith("Resuming from the checkpoint") and "(1 epochs done)" in m for m in logs)
    if point == "epoch:1":
        # The stop is a warning that names the step and where the checkpoint is; the model has every epoch.
        [stopped] = [log for log in rows if "Trainer stopped" in log.message]
        assert stopped.log_level == "warning" and stopped.metadata["step"] == "train"
        [model] = world.records.list_models(project.id)
        key = checkpoint_key(project.id, model.metadata["run_id"])
        assert stopped.metadata["checkpoint"]["url"] == world.storage.model_url(key)
        assert [h["epoch"] for h in model.metadata["history"]] == [1, 2]
        assert model.metadata["epochs_run"] == 2 and model.metadata["attempt"] == 2
