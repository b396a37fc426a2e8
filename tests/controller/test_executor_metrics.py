"""/metrics of an API with EXECUTOR=kubernetes (kmock): runs running and queued counted from the cluster's
TrainingRuns, runs finished counted once each as they end — the same series the local executor reports —
beside the request metrics of prometheus-fastapi-instrumentator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from uuid import uuid4

import pytest
from fastapi.testclient import TestClient

from tests.controller.conftest import NAMESPACE
from training_agent.api.executors.kubernetes import spec_for
from training_agent.api.main import create_app
from training_agent.core.kube import TrainingRuns
from training_agent.core.records import RecordsStore
from training_agent.core.settings import Settings
from training_agent.core.trainingrun import trainingrun_manifest


@pytest.fixture
async def api(k8s_settings: Settings, k8s_records: RecordsStore) -> AsyncIterator[TestClient]:
    # Through to_thread: kmock serves from this loop, which must stay free while the app calls it.
    client = TestClient(create_app(k8s_settings, records=k8s_records), raise_server_exceptions=False)
    await asyncio.to_thread(client.__enter__)
    yield client
    await asyncio.to_thread(client.__exit__, None, None, None)


async def put_run(runs: TrainingRuns, settings: Settings, phase: str) -> str:
    body = trainingrun_manifest(spec_for(uuid4(), {}, settings), NAMESPACE)
    await asyncio.to_thread(runs.create, body)
    await set_phase(runs, body["metadata"]["name"], phase)
    return str(body["metadata"]["name"])


async def set_phase(runs: TrainingRuns, name: str, phase: str) -> None:
    await asyncio.to_thread(runs.patch_status, name, {"phase": phase})


async def metrics(api: TestClient) -> str:
    response = await asyncio.to_thread(api.get, "/metrics")
    assert response.status_code == 200
    return response.text


async def test_runs_active_and_finished_by_executor(
    cluster: object, api: TestClient, k8s_settings: Settings, k8s_api: object
) -> None:
    runs = TrainingRuns(k8s_api, NAMESPACE)  # type: ignore[arg-type]
    running = await put_run(runs, k8s_settings, "Running")
    await put_run(runs, k8s_settings, "Queued")
    await put_run(runs, k8s_settings, "Succeeded")  # ended before the API counted: not one of its finishes

    text = await metrics(api)
    assert 'training_agent_runs_active{state="running"} 1.0' in text
    assert 'training_agent_runs_active{state="queued"} 1.0' in text
    assert "training_agent_runs_finished_total{" not in text

    await set_phase(runs, running, "Failed")
    text = await metrics(api)
    assert 'training_agent_runs_active{state="running"} 0.0' in text
    assert 'training_agent_runs_finished_total{executor="kubernetes",outcome="failed"} 1.0' in text
    text = await metrics(api)  # counted once, however often it is scraped
    assert 'training_agent_runs_finished_total{executor="kubernetes",outcome="failed"} 1.0' in text
    # The instrumentator's request metrics sit beside them (/metrics itself is not counted).
    assert 'http_requests_total{handler="/metrics"' not in text
    for name in ("http_requests_total", "http_request_duration_seconds", "http_request_size_bytes"):
        assert f"# TYPE {name}" in text, name
