"""The API server's reaper: local and CLI runs whose trainer stopped heart-beating are failed, their hung
process killed and their leftovers removed — at start-up and then every half lease; live, queued and
Kubernetes runs are left alone."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import FakeTrainers, dead_pid, wait_until
from tests.conftest import make_settings, seed_project
from training_agent.api.main import create_app
from training_agent.core.lease import update_run
from training_agent.core.records import Project, RecordsStore
from training_agent.core.records.models import utcnow
from training_agent.core.records.sqlite import SQLiteRecords
from training_agent.core.runs import RunPhase, run_name
from training_agent.core.settings import Settings
from training_agent.core.storage import ObjectStorage
from training_agent.core.sweep import checkpoint_prefix

START = "/agents/training/start"
LONG_AGO = (utcnow() - timedelta(hours=1)).isoformat()


@pytest.fixture
def lease_settings(tmp_path: Path) -> Settings:
    # A one-second lease: a pass every half second.
    return make_settings(tmp_path, run_lease_seconds=1, max_concurrent_runs=1)


@pytest.fixture
def records(lease_settings: Settings) -> RecordsStore:
    return SQLiteRecords(lease_settings.resolved_database_path)


@pytest.fixture
def client(lease_settings: Settings, records: RecordsStore) -> Iterator[TestClient]:
    with TestClient(
        create_app(lease_settings, records=records), raise_server_exceptions=False
    ) as test_client:
        yield test_client


def cli_run(records: RecordsStore, *, heartbeat_at: str | None, **fields: Any) -> tuple[Project, str]:
    """A project in `training` by `training-agent train` (a `cli` run), as its record would say."""
    run_id = uuid.uuid4().hex
    project_id = uuid.uuid4()
    run = {
        "name": run_name(project_id),
        "executor": "cli",
        "run_id": run_id,
        "attempt": 1,
        "accepted_at": LONG_AGO,
        "host": socket.gethostname(),
        "pid": dead_pid(),
        "heartbeat_at": heartbeat_at,
        **fields,
    }
    project = seed_project(records, "gs://bucket/d.zip", status="training", metadata={"training_run": run})
    return project, run_id


def leftovers(settings: Settings, project_id: UUID, run_id: str) -> tuple[Path, str]:
    """A work folder and a checkpoint object of the run, as a trainer killed mid-run leaves them."""
    folder = settings.work_dir / f"run-{project_id}-{run_id}-x"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "cache.bin").write_bytes(b"\0" * 1024)
    storage = ObjectStorage(settings)
    checkpoint = settings.work_dir.parent / "last.pt"
    checkpoint.write_bytes(b"weights")
    url = storage.model_url(checkpoint_prefix(project_id, run_id) + "last.pt")
    storage.upload(checkpoint, url)
    return folder, url


def status(records: RecordsStore, project_id: UUID) -> str:
    project = records.get_project(project_id)
    assert project is not None
    return project.status


def test_stale_cli_run_is_failed_and_its_leftovers_removed_at_start_up(
    lease_settings: Settings, records: RecordsStore
) -> None:
    stale, run_id = cli_run(records, heartbeat_at=LONG_AGO)
    folder, checkpoint = leftovers(lease_settings, stale.id, run_id)
    never_beat, _ = cli_run(records, heartbeat_at=None)  # a CLI run's lease starts with its claim
    with TestClient(create_app(lease_settings, records=records)):
        failed = records.get_project(stale.id)
        assert failed is not None and failed.status == "failed"
        assert failed.metadata["error"]["message"] == (
            f"The trainer stopped responding (last heartbeat {LONG_AGO}); start the project again"
        )
        assert failed.metadata["error"]["type"] == "LeaseExpired"
        assert records.recent_logs(stale.id)[0].log_level == "error"
        assert not folder.exists()
        assert ObjectStorage(lease_settings).list(checkpoint.rsplit("/", 1)[0] + "/") == []
        assert status(records, never_beat.id) == "failed"


def test_live_queued_and_kubernetes_runs_are_left_alone(
    client: TestClient, records: RecordsStore, fake_trainers: FakeTrainers
) -> None:
    live, live_run = cli_run(records, heartbeat_at=utcnow().isoformat())
    kube, _ = cli_run(records, heartbeat_at=LONG_AGO, executor="kubernetes")
    running = seed_project(records, "gs://bucket/d.zip")
    queued = seed_project(records, "gs://bucket/d.zip")
    assert client.post(START, json={"project_id": str(running.id)}).json()["phase"] == "Running"
    assert client.post(START, json={"project_id": str(queued.id)}).json()["phase"] == "Queued"
    # A run waiting in the queue may carry an old heartbeat (a retry waits for its slot): not reaped.
    update_run(records, queued.id, None, heartbeat_at=LONG_AGO)

    stop = threading.Event()

    def beat() -> None:  # the live CLI trainer renews its lease
        while not stop.wait(0.2):
            update_run(records, live.id, live_run, heartbeat_at=utcnow().isoformat())

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    try:
        # A run that goes silent now is reaped by a later pass, which proves passes ran meanwhile.
        silent, _ = cli_run(records, heartbeat_at=LONG_AGO)
        wait_until(lambda: status(records, silent.id) == "failed", "reaped", timeout_s=10)
        client.app.state.reaper.reap()  # type: ignore[attr-defined]  # and one more, for certain
    finally:
        stop.set()
        beater.join(timeout=5)
    assert status(records, live.id) == "training"
    assert status(records, kube.id) == "training"  # the controller reaps those
    assert status(records, queued.id) == "training"
    assert status(records, running.id) == "training"  # started, not beaten yet: no lease to expire
    executor = client.app.state.executor  # type: ignore[attr-defined]
    assert executor.describe(queued.id).phase == RunPhase.QUEUED


def test_hung_local_trainer_is_failed_killed_and_its_slot_freed(
    client: TestClient, records: RecordsStore, fake_trainers: FakeTrainers
) -> None:
    hung, queued = seed_project(records, "gs://bucket/d.zip"), seed_project(records, "gs://bucket/d.zip")
    client.post(START, json={"project_id": str(hung.id)})
    client.post(START, json={"project_id": str(queued.id)})
    executor = client.app.state.executor  # type: ignore[attr-defined]
    # The trainer beat once, long ago, and is still alive: hung.
    update_run(records, hung.id, None, heartbeat_at=LONG_AGO)
    wait_until(lambda: executor.describe(hung.id).exit_code is not None, "killed", timeout_s=10)
    assert executor.describe(hung.id).exit_code == -9
    assert executor.describe(hung.id).phase == RunPhase.FAILED
    failed = records.get_project(hung.id)
    assert failed is not None and failed.status == "failed"
    assert "The trainer stopped responding" in failed.metadata["error"]["message"]
    wait_until(lambda: executor.describe(queued.id).phase == RunPhase.RUNNING, "started", timeout_s=10)
    assert status(records, queued.id) == "training"
