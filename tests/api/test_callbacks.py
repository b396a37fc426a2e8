"""Callbacks and closing rows end to end through the API and the local executor: a refused `callback_url` is
a 400 that changes nothing; every way a run ends — the trainer's success or failure, a trainer killed, one
reaped, a cancel — writes exactly one closing `agent_logs` row and one signed report to a real receiver; an
unreachable receiver holds up neither the run nor the next one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import FakeTrainers, wait_for_status, wait_until
from tests.conftest import make_settings, seed_project
from tests.support.datasets import DatasetFactory
from tests.support.receiver import SECRET, Receiver, dead_url, receiving
from training_agent.api.main import create_app
from training_agent.core.completion import COMPLETE, FAILED
from training_agent.core.lease import update_run
from training_agent.core.records import RecordsStore
from training_agent.core.records.sqlite import SQLiteRecords
from training_agent.core.runs import RunPhase
from training_agent.core.settings import Settings

START = "/agents/training/start"
LONG_AGO = "2000-01-01T00:00:00+00:00"
REAL_TRAINER_S = 180  # a trainer's start (importing torch) alone takes ~20 s on a busy 2-core machine
# Plays a trainer that trained and recorded its model (what finish.record does), in a process that starts in
# a moment: for the cases about what happens after a run, not about training.
SUCCEEDING_TRAINER = """
import sys
from uuid import UUID
from training_agent.core.completion import log_complete
from training_agent.core.logs import AgentLog
from training_agent.core.records import NewModel, open_records
from training_agent.core.settings import load_settings
settings = load_settings()
records = open_records(settings)
project_id = UUID(sys.argv[sys.argv.index("--project-id") + 1])
url = "gs://b/models/m.pth"
records.insert_model(NewModel(project_id=project_id, name="m", gcs_url=url, metadata={"test_accuracy": 0.9}))
moved = records.transition_project(project_id, from_status="training", to_status="pending_evaluation")
log_complete(AgentLog(records, project_id, settings.agent_name), moved.name, url, test_accuracy=0.9)
"""


def cb_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "callback_allowed_hosts": "127.0.0.1",
        "callback_secret": SECRET,
        "callback_attempts": 3,
        "callback_backoff_seconds": 0.05,
        "callback_timeout_seconds": 2,
        "max_concurrent_runs": 1,
    }
    return make_settings(tmp_path, **{**values, **overrides})


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return cb_settings(tmp_path)


@pytest.fixture
def records(settings: Settings) -> RecordsStore:
    return SQLiteRecords(settings.resolved_database_path)


@pytest.fixture
def client(settings: Settings, records: RecordsStore) -> Iterator[TestClient]:
    with TestClient(create_app(settings, records=records), raise_server_exceptions=False) as test_client:
        yield test_client


def closing_rows(records: RecordsStore, project_id: UUID) -> list[tuple[str, str]]:
    rows = records.recent_logs(project_id, limit=500)
    return [(r.log_level, r.message) for r in rows if r.message.startswith((COMPLETE, FAILED))]


def start(client: TestClient, project_id: UUID, callback_url: str) -> None:
    response = client.post(START, json={"project_id": str(project_id), "callback_url": callback_url})
    assert response.status_code == 200, response.json()


def one_report(receiver: Receiver, timeout_s: float = 20) -> dict[str, Any]:
    [request] = receiver.wait_for(1, timeout_s)
    assert receiver.signed(request)
    return request.payload


# -- refused at the start ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://hooks.elsewhere.org/x", "callback_url host 'hooks.elsewhere.org' is not allowed by "),
        ("file:///etc/passwd", "callback_url must be an http or https URL with a host"),
    ],
)
def test_a_refused_callback_url_is_400_and_changes_nothing(
    client: TestClient, records: RecordsStore, url: str, says: str
) -> None:
    project = seed_project(records, "gs://bucket/d.zip")
    response = client.post(START, json={"project_id": str(project.id), "callback_url": url})
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert says in detail and detail.count(". ") == 0 and "Traceback" not in detail
    stored = records.get_project(project.id)
    assert (
        stored is not None and stored.status == "pending_training" and "training_run" not in stored.metadata
    )
    assert records.recent_logs(project.id) == []


def test_callbacks_off_is_400_naming_the_setting(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)  # no allowed hosts
    records = SQLiteRecords(settings.resolved_database_path)
    project = seed_project(records, "gs://bucket/d.zip")
    with TestClient(create_app(settings, records=records)) as client:
        response = client.post(
            START, json={"project_id": str(project.id), "callback_url": "https://a.example.com/hook"}
        )
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "Callbacks are off on this server: TRAINING_AGENT_CALLBACK_ALLOWED_HOSTS names no host."
    )


# -- real trainers -------------------------------------------------------------------------------------------
def test_trainer_success_one_closing_row_and_a_signed_report(
    client: TestClient, records: RecordsStore, datasets: DatasetFactory
) -> None:
    project = seed_project(records, str(datasets.shapes()), name="Shapes")
    with receiving() as receiver:
        start(client, project.id, receiver.url)
        payload = one_report(receiver, REAL_TRAINER_S)
    status = client.get(f"/agents/training/status/{project.id}").json()
    assert status["status"] == payload["status"] == "pending_evaluation"
    assert payload["model_url"] == status["model_url"] and payload["error"] is None
    assert 0 <= payload["metrics"]["test_accuracy"] <= 1 and payload["metrics"]["epochs_run"] == 1
    [(level, message)] = closing_rows(records, project.id)
    assert level == "info"
    assert message == (
        f"Training complete for project Shapes. Model uploaded to {status['model_url']} "
        f"(test accuracy {payload['metrics']['test_accuracy']:.1%}). Evaluation Agent can now begin."
    )


def test_trainer_failure_one_closing_row_and_a_signed_report(
    client: TestClient, records: RecordsStore, tmp_path: Path
) -> None:
    """The trainer fails and says so; the executor, seeing it exit, adds no second row."""
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"this is not a zip archive")
    project = seed_project(records, str(broken), name="Broken")
    with receiving() as receiver:
        start(client, project.id, receiver.url)
        payload = one_report(receiver, REAL_TRAINER_S)  # sent once the executor has settled the run
    assert payload["status"] == "failed" and payload["model_url"] is None
    stored = records.get_project(project.id)
    assert stored is not None and payload["error"]["message"] == stored.metadata["error"]["message"]
    [(level, message)] = closing_rows(records, project.id)
    step = stored.metadata["error"]["step"]
    assert (level, message) == (
        "error",
        f"Training failed for project Broken at step {step}: {stored.metadata['error']['message']}",
    )


# -- ended from outside the trainer -------------------------------------------------------------------------
def test_killed_trainer_one_closing_row_and_a_report(
    client: TestClient, records: RecordsStore, fake_trainers: FakeTrainers
) -> None:
    fake_trainers.script = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    project = seed_project(records, "gs://bucket/d.zip", name="Killed")
    with receiving() as receiver:
        start(client, project.id, receiver.url)
        payload = one_report(receiver)
    reason = "The trainer process exited with code -9 without reporting a result"
    assert payload["error"]["message"] == reason
    assert closing_rows(records, project.id) == [("error", f"Training failed for project Killed: {reason}")]


def test_reaped_trainer_one_closing_row_and_a_report(tmp_path: Path, fake_trainers: FakeTrainers) -> None:
    """A hung trainer (alive, its lease run out): the reaper fails the run and kills it; the executor, seeing
    it exit, writes no second row and the report goes once."""
    settings = cb_settings(tmp_path, run_lease_seconds=1)
    records = SQLiteRecords(settings.resolved_database_path)
    project = seed_project(records, "gs://bucket/d.zip", name="Hung")
    with (
        TestClient(create_app(settings, records=records)) as client,
        receiving() as receiver,
    ):
        start(client, project.id, receiver.url)
        executor = client.app.state.executor  # type: ignore[attr-defined]
        wait_until(lambda: executor.describe(project.id).pid is not None, "started")
        update_run(records, project.id, None, heartbeat_at=LONG_AGO)  # it beat once, long ago
        payload = one_report(receiver)
        wait_until(lambda: executor.describe(project.id).exit_code == -9, "killed", timeout_s=10)
        time.sleep(0.3)  # a second report would follow the settling at once
        assert len(receiver.received) == 1
    assert payload["error"]["type"] == "LeaseExpired"
    [(level, message)] = closing_rows(records, project.id)
    assert level == "error" and message.startswith("Training failed for project Hung: The trainer stopped ")


def test_cancel_one_closing_row_and_a_report(
    client: TestClient, records: RecordsStore, fake_trainers: FakeTrainers
) -> None:
    project = seed_project(records, "gs://bucket/d.zip", name="Cancelled")
    with receiving() as receiver:
        start(client, project.id, receiver.url)
        assert client.delete(f"/agents/training/{project.id}").status_code == 200
        payload = one_report(receiver)
    assert (payload["status"], payload["error"]["type"]) == ("failed", "Cancelled")
    wait_until(lambda: client.app.state.executor.describe(project.id).exit_code is not None, "stopped")  # type: ignore[attr-defined]
    assert closing_rows(records, project.id) == [
        ("error", "Training failed for project Cancelled: Cancelled by request")
    ]


def test_an_unreachable_receiver_holds_up_neither_the_run_nor_the_next(
    tmp_path: Path, fake_trainers: FakeTrainers
) -> None:
    settings = cb_settings(tmp_path, callback_attempts=3, callback_backoff_seconds=1.0)
    records = SQLiteRecords(settings.resolved_database_path)
    fake_trainers.script = SUCCEEDING_TRAINER
    first, second = seed_project(records, "gs://b/d.zip"), seed_project(records, "gs://b/d.zip")
    with TestClient(create_app(settings, records=records)) as client:
        start(client, first.id, dead_url())
        executor = client.app.state.executor  # type: ignore[attr-defined]
        wait_until(lambda: executor.describe(first.id).phase == RunPhase.SUCCEEDED, "succeeded", timeout_s=30)
        assert wait_for_status(records, first.id, {"pending_evaluation"}).status == "pending_evaluation"
        # The one slot is free while the report is still being tried (1 s, then 2 s of backoff).
        response = client.post(START, json={"project_id": str(second.id)})
        assert response.json()["phase"] == "Running"
        assert not [r for r in records.recent_logs(first.id) if r.log_level == "warning"]
        wait_until(
            lambda: any(r.log_level == "warning" for r in records.recent_logs(first.id)), "the warning", 20
        )
    [warning] = [r.message for r in records.recent_logs(first.id) if r.log_level == "warning"]
    assert "failed after 3 attempt(s): ConnectError" in warning
    assert [m for _, m in closing_rows(records, first.id)] == [
        "Training complete for project Demo project. Model uploaded to gs://b/models/m.pth "
        "(test accuracy 90.0%). Evaluation Agent can now begin."
    ]


def test_without_callback_url_nothing_is_sent(
    client: TestClient, records: RecordsStore, fake_trainers: FakeTrainers
) -> None:
    """The start of the seed contract (`{"project_id"}` alone) ends as before: one closing row, no report."""
    fake_trainers.script = "import sys; sys.exit(1)"
    project = seed_project(records, "gs://bucket/d.zip", name="Plain")
    with receiving() as receiver:
        assert client.post(START, json={"project_id": str(project.id)}).status_code == 200
        wait_for_status(records, project.id, {"failed"})
        executor = client.app.state.executor  # type: ignore[attr-defined]
        assert executor.wait_settled(30)  # the report, if any, is queued as the watcher's last act
        assert executor.describe(project.id).exit_code == 1
        assert executor.callbacks.join(5)
        assert receiver.received == []
    assert len(closing_rows(records, project.id)) == 1
