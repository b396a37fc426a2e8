"""Auth, errors, limits, CORS, health, readiness and metrics."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import FakeTrainers, wait_for_status, wait_until
from tests.conftest import make_settings, seed_project
from training_agent.api.main import create_app
from training_agent.core.errors import RecordsError
from training_agent.core.records import Project, RecordsStore
from training_agent.core.records.sqlite import SQLiteRecords
from training_agent.core.runs import RunPhase
from training_agent.core.trainer_process import trainer_command

KEY = "s3cret-key"


def make_client(tmp_path: Path, **overrides: Any) -> TestClient:
    settings = make_settings(tmp_path, **overrides)
    return TestClient(
        create_app(settings, records=SQLiteRecords(settings.resolved_database_path)),
        raise_server_exceptions=False,
    )


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path, MCP_API_KEY=KEY) as client:
        yield client


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {KEY}", "Bearer", f"Bearer {KEY}x"])
def test_api_key_required_when_set(secured: TestClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    for response in (
        secured.post(
            "/agents/training/start",
            json={"project_id": "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"},
            headers=headers,
        ),
        secured.get("/agents/training/status/6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f", headers=headers),
    ):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in response.json()["detail"]


def test_right_key_passes_and_probes_stay_open(secured: TestClient) -> None:
    response = secured.get(
        "/agents/training/status/6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f",
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert response.status_code == 404  # past the auth check
    for path in ("/health", "/ready", "/metrics"):
        assert secured.get(path).status_code == 200, path


def test_unexpected_errors_are_json_500_without_traceback(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(*args: Any) -> Any:
        raise ZeroDivisionError("secret internals")

    monkeypatch.setattr("training_agent.api.service.training_status", explode)
    response = client.get(
        "/agents/training/status/6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f", headers={"X-Request-ID": "req-123"}
    )
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error (request id req-123)"}
    assert "secret internals" not in response.text
    assert any("req-123" in r.getMessage() and r.exc_info for r in caplog.records)


def test_records_down_is_503(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*args: Any, **kwargs: Any) -> Any:
        raise RecordsError("Cannot reach Supabase at https://x.supabase.co")

    monkeypatch.setattr(SQLiteRecords, "get_project", down)
    response = client.post(
        "/agents/training/start", json={"project_id": "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"}
    )
    assert response.status_code == 503
    assert "Cannot reach Supabase" in response.json()["detail"]


def test_request_ids(client: TestClient) -> None:
    assert client.get("/health", headers={"X-Request-ID": "abc"}).headers["x-request-id"] == "abc"
    assert len(client.get("/health").headers["x-request-id"]) == 32


def test_body_size_limit(tmp_path: Path) -> None:
    with make_client(tmp_path, max_request_bytes=100) as client:
        big = {"project_id": "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f", "pad": "x" * 200}
        response = client.post("/agents/training/start", json=big)
        assert response.status_code == 413
        assert response.json() == {"detail": "Request body too large; the limit is 100 bytes"}

        def chunks() -> Iterator[bytes]:  # no Content-Length: the streamed bytes are counted
            yield b'{"project_id": "'
            yield b"x" * 200
            yield b'"}'

        response = client.post(
            "/agents/training/start", content=chunks(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413


def test_cors_off_by_default_and_on_when_configured(client: TestClient, tmp_path: Path) -> None:
    preflight = {"Origin": "https://ui.example", "Access-Control-Request-Method": "POST"}
    assert (
        "access-control-allow-origin"
        not in client.options("/agents/training/start", headers=preflight).headers
    )
    with make_client(tmp_path / "cors", cors_origins="https://ui.example") as cors:
        response = cors.options("/agents/training/start", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "https://ui.example"


def test_health(client: TestClient) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["executor"] == "local" and body["version"]


def test_ready_names_what_is_down(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    assert client.get("/ready").json() == {
        "status": "ready",
        "checks": {"records": "ok", "storage": "ok", "executor": "ok"},
    }

    def down(self: object) -> None:
        raise RecordsError("database is locked")

    monkeypatch.setattr(SQLiteRecords, "ping", down)
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["records"] == "RecordsError: database is locked"
    assert response.json()["checks"]["storage"] == "ok"


def test_metrics_count_runs_and_requests(
    client: TestClient, api_records: RecordsStore, ready_project: Callable[..., Project]
) -> None:
    project = ready_project()
    client.post("/agents/training/start", json={"project_id": str(project.id)})
    wait_for_status(api_records, project.id, {"pending_evaluation", "failed"})
    client.app.state.executor.shutdown()  # type: ignore[attr-defined]  # joins the watcher: counters settled
    text = client.get("/metrics").text
    assert 'training_agent_runs_started_total{executor="local"} 1.0' in text
    assert 'training_agent_runs_finished_total{executor="local",outcome="succeeded"} 1.0' in text
    # Requests by route template (prometheus-fastapi-instrumentator): never a label per project id.
    assert 'http_requests_total{handler="/agents/training/start",method="POST",status="2xx"} 1.0' in text
    assert 'http_request_duration_seconds_count{handler="/agents/training/start",method="POST"} 1.0' in text
    assert 'handler="/agents/training/status/{project_id}"' not in text
    assert str(project.id) not in text
    assert 'training_agent_runs_active{state="running"} 0.0' in text


def test_metrics_count_cancelled_runs_as_cancelled(
    client: TestClient, api_records: RecordsStore, fake_trainers: FakeTrainers
) -> None:
    project = seed_project(api_records, "gs://bucket/d.zip")
    client.post("/agents/training/start", json={"project_id": str(project.id)})
    assert client.delete(f"/agents/training/{project.id}").status_code == 200
    executor = client.app.state.executor  # type: ignore[attr-defined]
    assert executor.wait_settled(30)  # the outcome is counted after the phase is set
    run = executor.describe(project.id)
    assert run.phase == RunPhase.CANCELLED and run.exit_code == -signal.SIGTERM
    text = client.get("/metrics").text
    assert 'training_agent_runs_finished_total{executor="local",outcome="cancelled"} 1.0' in text
    assert 'outcome="failed"' not in text


def test_openapi_and_docs(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    start = schema["paths"]["/agents/training/start"]["post"]
    assert set(start["responses"]) >= {"200", "400", "401", "404", "409", "422", "503"}
    assert schema["components"]["schemas"]["StartRequest"]["examples"]
    assert client.get("/docs").status_code == 200


def test_the_local_executor_starts_as_many_processes_as_set(
    tmp_path: Path, fake_trainers: FakeTrainers
) -> None:
    """TRAINING_AGENT_LOCAL_NPROC_PER_NODE reaches the trainer's start (torchrun's process count)."""
    settings = make_settings(tmp_path, local_nproc_per_node=2)
    records = SQLiteRecords(settings.resolved_database_path)
    project = seed_project(records, "gs://bucket/d.zip")
    with TestClient(create_app(settings, records=records)) as client:
        assert client.post("/agents/training/start", json={"project_id": str(project.id)}).status_code == 200
        wait_until(lambda: fake_trainers.processes == [2], "the trainer started")


def test_the_trainer_command_runs_torchrun_for_several_processes() -> None:
    project_id = uuid4()
    assert trainer_command(project_id, claimed=True)[1:4] == ["-m", "training_agent", "train"]
    several = trainer_command(project_id, claimed=True, processes=3)
    assert several[1:8] == ["-m", "training_agent", "torchrun", "--standalone", "--nproc-per-node", "3", "-m"]
    assert several[8:10] == ["training_agent", "train"]
