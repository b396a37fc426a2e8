"""Request ids from asgi-correlation-id and the API's JSON log lines: each line of a request carries its id
and, on the training routes, the project and its run; LOG_LEVEL decides which lines are written."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import FakeTrainers
from tests.support.logs import product_logging
from training_agent.core.records import Project


@pytest.fixture
def started(
    client: TestClient, ready_project: Callable[..., Project], fake_trainers: FakeTrainers
) -> Callable[..., tuple[Project, str]]:
    def start(**headers: str) -> tuple[Project, str]:
        project = ready_project()
        response = client.post(
            "/agents/training/start", json={"project_id": str(project.id)}, headers=headers
        )
        assert response.status_code == 200, response.text
        return project, response.headers["x-request-id"]

    return start


def test_json_lines_of_a_request_carry_its_id_and_project(
    started: Callable[..., tuple[Project, str]],
) -> None:
    with product_logging("INFO", "json") as captured:
        project, request_id = started(**{"X-Request-ID": "start-42"})
    assert request_id == "start-42"
    lines = [r for r in captured.records() if r.get("request_id") == "start-42"]
    announced = [r for r in lines if "Training initiated" in r["message"]]
    assert announced, captured.lines()
    for line in announced:
        assert line["project_id"] == str(project.id) and line["run_name"] == f"tr-{project.id}"
        assert line["level"] == "INFO" and line["logger"] == "training_agent.steps"
        assert set(line) >= {"timestamp", "level", "logger", "message"}


def test_log_level_is_honoured(started: Callable[..., tuple[Project, str]]) -> None:
    with product_logging("WARNING", "json") as captured:
        started()
    assert all(r["level"] in ("WARNING", "ERROR", "CRITICAL") for r in captured.records())
    assert not any("Training initiated" in r["message"] for r in captured.records())


def test_request_ids_kept_generated_and_cleaned(client: TestClient) -> None:
    assert client.get("/health", headers={"X-Request-ID": "abc"}).headers["x-request-id"] == "abc"
    generated = client.get("/health").headers["x-request-id"]
    assert len(generated) == 32 and int(generated, 16) >= 0  # a uuid4 in hex
    # Longer ids are cut to 64 characters; ids with control characters are replaced by a new one.
    assert client.get("/health", headers={"X-Request-ID": "x" * 100}).headers["x-request-id"] == "x" * 64
    replaced = client.get("/health", headers={"X-Request-ID": "bad\tid"}).headers["x-request-id"]
    assert replaced != "bad\tid" and len(replaced) == 32
    # Every response gets one, refusals by the middleware included.
    response = client.post("/agents/training/start", content=b"x" * 100_000)
    assert response.status_code == 413 and len(response.headers["x-request-id"]) == 32
