"""In-epoch progress on Kubernetes: the trainer's heartbeat writes it into the run record; the controller
copies it into the TrainingRun's status (against kmock), where kubectl's Progress and ETA columns read it."""

from __future__ import annotations

from typing import Any

import kmock
import pytest
from kubernetes import client

from tests.controller.conftest import eventually
from tests.controller.test_operator import patch_job_status, run_status, start_pod
from training_agent.controller.progress import progress_text, run_progress
from training_agent.core.records import Project, RecordsStore
from training_agent.core.records.models import utcnow
from training_agent.core.runs import Progress, StepProgress, duration_text
from training_agent.trainer.heartbeat import Heartbeat
from training_agent.trainer.progress import ProgressReporter, Step


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def progress_of(cluster: kmock.KubernetesEmulator, name: str) -> dict[str, Any]:
    return dict(run_status(cluster, name).get("progress") or {})


async def test_the_controller_copies_the_heartbeats_progress(
    cluster: kmock.KubernetesEmulator,
    k8s_api: client.ApiClient,
    k8s_records: RecordsStore,
    started_run: tuple[Project, str],
) -> None:
    project, name = started_run
    await start_pod(k8s_api, name, {"phase": "Running"})
    await patch_job_status(k8s_api, name, {"active": 1})
    await eventually(lambda: run_status(cluster, name).get("phase") == "Running", what="Running")
    assert "text" not in progress_of(cluster, name)  # no step reported yet

    # The trainer's side, in-process: its reporter (fed as its training loop does) and its heartbeat.
    clock = Clock()
    reporter = ProgressReporter(clock=clock)
    heartbeat = Heartbeat(
        k8s_records,
        project.id,
        "run-1",
        interval_s=60.0,
        attempt=1,
        on_lost=lambda: None,
        progress=reporter.snapshot,
        progress_every_s=0.05,
    )
    heartbeat.start()
    try:
        reporter(Step(epoch=1, epochs=4, step=0, steps=100, images=0))
        clock.now = 9.0
        reporter(Step(epoch=1, epochs=4, step=45, steps=100, images=1440))
        # 0.2 s a step: 55 steps left and 3 epochs of 100 steps = 71 s.
        progress = await eventually(
            lambda: progress_of(cluster, name).get("step") == 45 and progress_of(cluster, name),
            what="step 45 in the TrainingRun's status",
        )
        assert progress["text"] == "e1/4 45%" and progress["eta"] == "1m11s"
        assert progress["steps"] == 100 and progress["etaSeconds"] == 71.0
        assert progress["imagesPerSecond"] == 160.0 and progress["updatedAt"]
        clock.now = 18.0
        reporter(Step(epoch=1, epochs=4, step=90, steps=100, images=2880))
        moved = await eventually(
            lambda: progress_of(cluster, name).get("step") == 90 and progress_of(cluster, name),
            what="step 90 in the TrainingRun's status",
        )
        assert moved["text"] == "e1/4 90%" and moved["eta"] == "1m02s"
    finally:
        heartbeat.stop()

    k8s_records.transition_project(project.id, from_status="training", to_status="pending_evaluation")
    await patch_job_status(
        k8s_api, name, {"active": 0, "succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    )
    done = await eventually(
        lambda: run_status(cluster, name).get("phase") == "Succeeded" and progress_of(cluster, name),
        what="Succeeded",
    )
    assert done["eta"] == "0s" and done["text"].endswith(" 100%")  # whatever the last report said


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (44.6, "45s"), (245, "4m05s"), (3600 * 2 + 7 * 60 + 30, "2h07m")]
)
def test_duration_text(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


def test_progress_text() -> None:
    assert progress_text(3, 10, 45, 100) == "e3/10 45%"
    assert progress_text(3, 10, 100, 100) == "e3/10 100%"
    assert progress_text(1, 10, 0, 0) == "e1/10 0%"  # an empty epoch: no division by zero


def test_run_progress_without_an_in_epoch_report_keeps_the_epoch_fields() -> None:
    epochs = Progress(epoch=2, total_epochs=4, train_loss=0.5, val_accuracy=0.8, images_per_s=900.0)
    assert run_progress(epochs, None, finished=False) == {
        "epoch": 2,
        "totalEpochs": 4,
        "epochText": "2/4",
        "trainLoss": 0.5,
        "valAccuracy": 0.8,
        "imagesPerSecond": 900.0,
    }
    live = StepProgress(epoch=4, epochs=4, step=10, steps=10, images=80, eta_seconds=3.0, updated_at=utcnow())
    finished = run_progress(Progress(epoch=4, total_epochs=4), live, finished=True)
    assert (finished["text"], finished["eta"], finished["etaSeconds"]) == ("e4/4 100%", "0s", 0.0)
