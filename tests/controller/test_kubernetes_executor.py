"""The API with EXECUTOR=kubernetes, end to end against kmock: POST start → TrainingRun → Job; cancel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import kmock
import pytest
from fastapi.testclient import TestClient

from tests.conftest import seed_project
from tests.controller.conftest import NAMESPACE, eventually
from training_agent.api.main import create_app
from training_agent.core.records import RecordsStore
from training_agent.core.settings import Settings

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
