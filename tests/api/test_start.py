"""POST /agents/training/start: validation, status codes, the compare-and-set claim, the local executor."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from uuid import uuid4

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import wait_for_status
from tests.conftest import seed_project
from training_agent.core.records import Project, RecordsStore
from training_agent.core.runs import RunPhase

START = "/agents/training/start"


@pytest.mark.parametrize(
    "body",
    [{}, {"project_id": "not-a-uuid"}, {"project_id": 42}, {"project_id": str(uuid4()), "epochs": 3}, []],
    ids=["missing", "not-uuid", "number", "extra-field", "not-an-object"],
)
def test_invalid_bodies_are_422(client: TestClient, body: object) -> None:
    response = client.post(START, json=body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, list) and all(error["msg"] for error in detail)


def test_non_json_body_is_422(client: TestClient) -> None:
    response = client.post(START, content=b"project_id=1", headers={"content-type": "text/plain"})
    assert response.status_code == 422
    # Declared as JSON but not JSON: the parser's reason is in the message (tests/api/test_bad_input.py).
    response = client.post(START, content=b"project_id=1", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"].startswith("The body is not valid JSON: ")


def test_unknown_project_is_404(client: TestClient) -> None:
    missing = uuid4()
    response = client.post(START, json={"project_id": str(missing)})
    assert response.status_code == 404
    assert response.json() == {"detail": f"Project {missing} not found"}


def test_wrong_status_is_400_naming_it(client: TestClient, api_records: RecordsStore) -> None:
    project = seed_project(api_records, "gs://bucket/x.zip", status="pending_evaluation")
    response = client.post(START, json={"project_id": str(project.id)})
    assert response.status_code == 400
    assert "is in status 'pending_evaluation'" in response.json()["detail"]
    assert api_records.get_project(project.id).status == "pending_evaluation"  # type: ignore[union-attr]


def test_no_dataset_is_400(client: TestClient, api_records: RecordsStore) -> None:
    project = seed_project(api_records, None)
    response = client.post(START, json={"project_id": str(project.id)})
    assert response.status_code == 400
    assert "no dataset" in response.json()["detail"]
    assert api_records.get_project(project.id).status == "pending_training"  # type: ignore[union-attr]


def test_start_runs_the_trainer_to_pending_evaluation(
    client: TestClient, api_records: RecordsStore, ready_project: Callable[..., Project]
) -> None:
    project = ready_project()
    response = client.post(START, json={"project_id": str(project.id)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["project_id"] == str(project.id)
    assert body["run_name"] == f"tr-{project.id}"
    assert body["status"] == "training"
    assert body["phase"] in ("Running", "Queued")
    assert body["status_url"] == f"/agents/training/status/{project.id}"
    assert api_records.get_project(project.id).status == "training"  # type: ignore[union-attr]

    done = wait_for_status(api_records, project.id, {"pending_evaluation", "failed"})
    assert done.status == "pending_evaluation", done.metadata.get("error")
    messages = [log.message for log in reversed(api_records.recent_logs(project.id, limit=100))]
    assert messages[0] == "Training initiated" and messages.count("Training initiated") == 1
    assert messages[1] == "Trainer started"
    assert done.metadata["training_run"]["executor"] == "local"
    assert isinstance(done.metadata["training_run"]["pid"], int)

    again = client.post(START, json={"project_id": str(project.id)})
    assert again.status_code == 400  # it is pending_evaluation now: never a second run


def test_parallel_starts_make_one_run(
    client: TestClient, api_records: RecordsStore, ready_project: Callable[..., Project]
) -> None:
    project = ready_project()
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(
            pool.map(lambda _: client.post(START, json={"project_id": str(project.id)}), range(20))
        )
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) == 1, codes
    assert set(codes) <= {200, 400, 409}
    wait_for_status(api_records, project.id, {"pending_evaluation", "failed"})
    messages = [log.message for log in api_records.recent_logs(project.id, limit=200)]
    assert messages.count("Training initiated") == 1 and messages.count("Trainer started") == 1
    assert len(api_records.list_models(project.id)) == 1


def test_runs_beyond_the_limit_wait_in_order(
    client: TestClient, api_records: RecordsStore, ready_project: Callable[..., Project]
) -> None:
    first, second, third = ready_project(epochs=2), ready_project(), ready_project()
    bodies = [client.post(START, json={"project_id": str(p.id)}).json() for p in (first, second, third)]
    assert [b["phase"] for b in bodies] == ["Running", "Queued", "Queued"]
    assert [b["queue_position"] for b in bodies] == [None, 1, 2]
    status = client.get(f"/agents/training/status/{third.id}").json()
    assert status["run"]["phase"] in ("Queued", "Running", "Succeeded")
    for project in (first, second, third):
        assert wait_for_status(api_records, project.id, {"pending_evaluation", "failed"}).status == (
            "pending_evaluation"
        )
    stored = [api_records.get_project(p.id) for p in (first, second, third)]
    started = [p.metadata["training_run"]["started_at"] for p in stored if p is not None]
    assert len(started) == 3 and started == sorted(started)  # started one after the other, in arrival order


def test_trainer_killed_without_reporting_fails_the_project(
    client: TestClient, app: object, api_records: RecordsStore, ready_project: Callable[..., Project]
) -> None:
    project = ready_project(epochs=200)
    assert client.post(START, json={"project_id": str(project.id)}).status_code == 200
    executor = client.app.state.executor  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while (info := executor.describe(project.id)).pid is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(info.pid, signal.SIGKILL)
    failed = wait_for_status(api_records, project.id, {"failed", "pending_evaluation"})
    assert failed.status == "failed"
    assert failed.metadata["error"]["message"] == (
        "The trainer process exited with code -9 without reporting a result"
    )
    assert failed.metadata["error"]["step"] == "worker"
    assert executor.wait_settled(30)  # the watcher fails the project, cleans up, then sets the phase
    assert executor.describe(project.id).phase == RunPhase.FAILED
    assert executor.describe(project.id).exit_code == -9


def test_executor_refusing_the_run_is_503_and_fails_the_project(
    client: TestClient, api_records: RecordsStore, ready_project: Callable[..., Project]
) -> None:
    client.app.state.executor.shutdown()  # type: ignore[attr-defined]
    project = ready_project()
    response = client.post(START, json={"project_id": str(project.id)})
    assert response.status_code == 503
    assert "could not take the run" in response.json()["detail"]
    stored = api_records.get_project(project.id)
    assert stored is not None and stored.status == "failed" and stored.metadata["error"]["step"] == "submit"


def test_cancel_stops_a_running_and_a_queued_run(
    client: TestClient, api_records: RecordsStore, ready_project: Callable[..., Project]
) -> None:
    running, queued = ready_project(epochs=500), ready_project()
    client.post(START, json={"project_id": str(running.id)})
    client.post(START, json={"project_id": str(queued.id)})
    for project in (queued, running):
        response = client.delete(f"/agents/training/{project.id}")
        assert response.status_code == 200, response.text
        assert response.json() == {
            "project_id": str(project.id),
            "run_name": f"tr-{project.id}",
            "cancelled": True,
        }
    for project in (running, queued):
        stored = wait_for_status(api_records, project.id, {"failed", "pending_evaluation"})
        assert stored.status == "failed"
        assert stored.metadata["error"]["message"] == "Cancelled by request"
    executor = client.app.state.executor  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while executor.describe(running.id).exit_code is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert executor.describe(running.id).phase == RunPhase.CANCELLED
    assert executor.describe(running.id).exit_code is not None  # the trainer process has ended


def test_cancel_errors(client: TestClient, api_records: RecordsStore) -> None:
    assert client.delete(f"/agents/training/{uuid4()}").status_code == 404
    idle = seed_project(api_records, "gs://bucket/x.zip")
    response = client.delete(f"/agents/training/{idle.id}")
    assert response.status_code == 409 and "only a training run can be cancelled" in response.json()["detail"]
    orphan = seed_project(api_records, "gs://bucket/x.zip", status="training")
    response = client.delete(f"/agents/training/{orphan.id}")
    assert response.status_code == 404 and "has no run in the local executor" in response.json()["detail"]
