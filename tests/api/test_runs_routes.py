"""GET /agents/training/runs and GET /agents/training/logs/{project_id}."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

from fastapi.testclient import TestClient

from tests.api.conftest import FakeTrainers
from tests.conftest import make_settings, seed_project
from training_agent.api.main import create_app
from training_agent.core.records import RecordsStore

RUNS = "/agents/training/runs"


def logs_url(project_id: object) -> str:
    return f"/agents/training/logs/{project_id}"


def test_runs_are_the_agents_projects_most_recently_updated_first(
    client: TestClient, api_records: RecordsStore, fake_trainers: FakeTrainers
) -> None:
    assert client.get(RUNS).json() == {"runs": []}
    waiting = seed_project(api_records, "gs://bucket/d.zip", name="waiting")
    seed_project(api_records, None, status="pending_dataset", name="another agent's")
    failed = seed_project(api_records, None, status="failed", name="failed")
    api_records.transition_project(
        failed.id, from_status="failed", to_status="failed", metadata_patch={"error": {"message": "Bad zip"}}
    )
    started = seed_project(api_records, "gs://bucket/d.zip", name="started")
    assert client.post("/agents/training/start", json={"project_id": str(started.id)}).status_code == 200

    runs = client.get(RUNS).json()["runs"]
    assert [run["project_name"] for run in runs] == ["started", "failed", "waiting"]
    assert runs[0]["status"] == "training" and runs[0]["run"]["name"] == f"tr-{started.id}"
    assert runs[0]["run"]["executor"] == "local" and runs[0]["run"]["phase"] == "Running"
    assert runs[1]["error"] == "Bad zip" and runs[1]["run"] is None
    assert runs[2]["status"] == "pending_training" and runs[2]["error"] is None
    assert runs[2]["project_id"] == str(waiting.id) and runs[2]["updated_at"]

    only_failed = client.get(RUNS, params={"status": "failed"}).json()["runs"]
    assert [run["project_name"] for run in only_failed] == ["failed"]
    assert [run["project_name"] for run in client.get(RUNS, params={"limit": 1}).json()["runs"]] == [
        "started"
    ]


def test_runs_refuse_bad_queries(client: TestClient) -> None:
    for params in ({"status": "pending_dataset"}, {"limit": 0}, {"limit": 501}, {"limit": "many"}):
        assert client.get(RUNS, params=params).status_code == 422, params


def test_logs_filtered_by_level_oldest_first(client: TestClient, api_records: RecordsStore) -> None:
    project = seed_project(api_records, None)
    for level, message in [("debug", "a"), ("info", "b"), ("warning", "c"), ("error", "d"), ("info", "e")]:
        api_records.insert_log(project.id, "training-agent", level, message, {"n": message})

    everything = client.get(logs_url(project.id)).json()
    assert everything["project_id"] == str(project.id)
    assert [row["message"] for row in everything["logs"]] == ["a", "b", "c", "d", "e"]
    assert everything["logs"][0]["metadata"] == {"n": "a"}
    assert everything["logs"][0]["log_level"] == "debug"

    def messages(**params: str | int) -> list[str]:
        response = client.get(logs_url(project.id), params=params)
        assert response.status_code == 200, response.text
        return [row["message"] for row in response.json()["logs"]]

    assert messages(level="warning") == ["c", "d"]
    assert messages(level="info") == ["b", "c", "d", "e"]
    assert messages(level="error") == ["d"]
    assert messages(tail=2) == ["d", "e"]
    assert messages(level="info", tail=2) == ["d", "e"]


def test_logs_errors(client: TestClient) -> None:
    missing = uuid4()
    response = client.get(logs_url(missing))
    assert response.status_code == 404 and response.json() == {"detail": f"Project {missing} not found"}
    assert client.get(logs_url("nope")).status_code == 422
    for params in ({"level": "loud"}, {"tail": 0}, {"tail": 1001}):
        assert client.get(logs_url(missing), params=params).status_code == 422, params


def test_new_routes_need_the_api_key(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, mcp_api_key="k"))
    with TestClient(app) as client:
        for path in (RUNS, logs_url(uuid4())):
            refused = client.get(path)
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
            allowed = client.get(path, headers={"Authorization": "Bearer k"})
            assert allowed.status_code in (200, 404)
