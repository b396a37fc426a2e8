"""The API with EXECUTOR=kubernetes, end to end against kmock: POST start → TrainingRun → Job; cancel; a run
accepted but never handed to the cluster (the API stopped in between) is failed by the next API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import kmock
import pytest
from fastapi.testclient import TestClient

from tests.conftest import seed_project
from tests.controller.conftest import NAMESPACE, eventually
from training_agent.api.executors.kubernetes import UNSUBMITTED_MESSAGE, spec_for
from training_agent.api.main import create_app
from training_agent.core.kube import TrainingRuns
from training_agent.core.lease import RUN_KEY, new_run
from training_agent.core.records import Project, RecordsStore
from training_agent.core.records.models import utcnow
from training_agent.core.settings import Settings
from training_agent.core.trainingrun import trainingrun_manifest

RUNS = "automl.dev/v1alpha1/trainingruns"
JOBS = "batch/v1/jobs"


@pytest.fixture
async def api(k8s_settings: Settings, k8s_records: RecordsStore) -> AsyncIterator[TestClient]:
    # The app runs in TestClient's thread; every call goes through to_thread so kmock's loop stays free.
    client = TestClient(create_app(k8s_settings, records=k8s_records), raise_server_exceptions=False)
    await asyncio.to_thread(client.__enter__)
    yield client
    await asyncio.to_thread(client.__exit__, None, None, None)


async def call(client: TestClient, method: str, url: str, **kwargs: Any) -> Any:
    return await asyncio.to_thread(client.request, method, url, **kwargs)


async def test_start_creates_the_run_and_the_controller_its_job(
    cluster: kmock.KubernetesEmulator,
    controller: Any,
    api: TestClient,
    k8s_records: RecordsStore,
) -> None:
    await controller()
    project = seed_project(
        k8s_records, "gs://bucket/data.zip", metadata={"epochs": 5, "preferred_model": "resnet50"}
    )
    response = await call(api, "POST", "/agents/training/start", json={"project_id": str(project.id)})
    assert response.status_code == 200, response.text
    name = f"tr-{project.id}"
    assert response.json()["run_name"] == name and response.json()["phase"] == "Pending"

    run = dict(cluster.objects[RUNS, NAMESPACE, name])
    assert run["spec"]["projectId"] == str(project.id)
    assert run["spec"]["model"] == "resnet50" and run["spec"]["epochs"] == 5
    assert run["spec"]["image"] == "registry.example/trainer:1.0"
    await eventually(lambda: dict(cluster.objects[JOBS, NAMESPACE, name]), what="the Job")
    stored = k8s_records.get_project(project.id)
    assert stored is not None and stored.status == "training"
    assert stored.metadata["training_run"]["executor"] == "kubernetes"

    status = (await call(api, "GET", f"/agents/training/status/{project.id}")).json()
    assert status["run"]["executor"] == "kubernetes" and status["run"]["name"] == name
    ready = await call(api, "GET", "/ready")
    assert ready.json()["checks"]["executor"] == "ok"


async def test_second_submission_finds_the_first_run(
    cluster: kmock.KubernetesEmulator,
    api: TestClient,
    k8s_records: RecordsStore,
) -> None:
    project = seed_project(k8s_records, "gs://bucket/data.zip")
    executor = api.app.state.executor  # type: ignore[attr-defined]
    first = await asyncio.to_thread(executor.submit, project.id)
    again = await asyncio.to_thread(executor.submit, project.id)  # 409 inside: the existing run
    assert first.name == again.name
    runs = [key for key in cluster.objects if str(key[0]) == str(kmock.resource(RUNS))]
    assert len(runs) == 1


async def test_cancel_deletes_the_run(
    cluster: kmock.KubernetesEmulator,
    controller: Any,
    api: TestClient,
    k8s_records: RecordsStore,
) -> None:
    await controller()
    project = seed_project(k8s_records, "gs://bucket/data.zip")
    await call(api, "POST", "/agents/training/start", json={"project_id": str(project.id)})
    name = f"tr-{project.id}"
    await eventually(lambda: dict(cluster.objects[JOBS, NAMESPACE, name]), what="the Job")
    response = await call(api, "DELETE", f"/agents/training/{project.id}")
    assert response.status_code == 200, response.text
    assert response.json() == {"project_id": str(project.id), "run_name": name, "cancelled": True}
    stored = await eventually(
        lambda: (p := k8s_records.get_project(project.id)) and p.status == "failed" and p
    )
    assert stored.metadata["error"]["message"] == "Cancelled: The TrainingRun was deleted"
    again = await call(api, "DELETE", f"/agents/training/{project.id}")
    assert again.status_code == 409


# -- a run the API accepted and never handed to the cluster --------------------------------------------------
def kubernetes_run(records: RecordsStore, *, accepted_s_ago: float, **fields: Any) -> Project:
    """A project claimed for the kubernetes executor (`training`, its run record written) `accepted_s_ago`."""
    project = seed_project(records, "gs://bucket/data.zip")
    accepted = (utcnow() - timedelta(seconds=accepted_s_ago)).isoformat()
    record = {**new_run(project.id, "kubernetes"), "accepted_at": accepted, **fields}
    moved = records.transition_project(
        project.id, from_status="pending_training", to_status="training", metadata_patch={RUN_KEY: record}
    )
    assert moved is not None
    return moved


def status_of(records: RecordsStore, project: Project) -> str:
    stored = records.get_project(project.id)
    assert stored is not None
    return stored.status


async def test_a_run_that_never_reached_the_cluster_is_failed_at_start_up(
    cluster: kmock.KubernetesEmulator,
    k8s_settings: Settings,
    k8s_records: RecordsStore,
    k8s_api: Any,
) -> None:
    """The API stopped between the claim and the TrainingRun's creation: nobody else can ever see the run
    (the controller sees TrainingRuns only), so the next API process fails it."""
    lost = kubernetes_run(k8s_records, accepted_s_ago=3600)
    submitted = kubernetes_run(k8s_records, accepted_s_ago=3600)
    await asyncio.to_thread(
        TrainingRuns(k8s_api, NAMESPACE).create,
        trainingrun_manifest(spec_for(submitted.id, {}, k8s_settings), NAMESPACE),
    )
    beaten = kubernetes_run(k8s_records, accepted_s_ago=3600, heartbeat_at=utcnow().isoformat())
    young = kubernetes_run(k8s_records, accepted_s_ago=0)  # a start still on its way (another replica)
    client = TestClient(create_app(k8s_settings, records=k8s_records), raise_server_exceptions=False)
    await asyncio.to_thread(client.__enter__)
    try:
        failed = k8s_records.get_project(lost.id)
        assert failed is not None and failed.status == "failed"
        error = failed.metadata["error"]
        assert error["message"] == UNSUBMITTED_MESSAGE
        assert (error["type"], error["step"]) == ("NotSubmitted", "submit")
        assert [(log.log_level, log.message) for log in k8s_records.recent_logs(lost.id)] == [
            ("error", f"Training failed for project {lost.name}: {UNSUBMITTED_MESSAGE}")
        ]
        for untouched in (submitted, beaten, young):
            assert status_of(k8s_records, untouched) == "training"
        status = (await call(client, "GET", f"/agents/training/status/{lost.id}")).json()
        assert status["status"] == "failed" and status["error"]["message"] == UNSUBMITTED_MESSAGE
    finally:
        await asyncio.to_thread(client.__exit__, None, None, None)


async def test_the_reaper_fails_it_once_the_grace_has_passed(
    cluster: kmock.KubernetesEmulator,
    k8s_settings: Settings,
    k8s_records: RecordsStore,
) -> None:
    """A lost start found while it is younger than the grace (a lease) is failed by a later pass."""
    settings = k8s_settings.model_copy(update={"run_lease_seconds": 2.0})  # a pass every second
    client = TestClient(create_app(settings, records=k8s_records), raise_server_exceptions=False)
    await asyncio.to_thread(client.__enter__)
    try:
        lost = kubernetes_run(k8s_records, accepted_s_ago=0)
        assert status_of(k8s_records, lost) == "training"  # within the grace
        await eventually(lambda: status_of(k8s_records, lost) == "failed", timeout=10, what="reaped")
        error = k8s_records.get_project(lost.id).metadata["error"]  # type: ignore[union-attr]
        assert error["message"] == UNSUBMITTED_MESSAGE
    finally:
        await asyncio.to_thread(client.__exit__, None, None, None)
