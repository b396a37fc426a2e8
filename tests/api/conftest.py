"""An app per test on the embedded stores, served through Starlette's TestClient with its lifespan, so the
real local executor starts real trainer processes (or, with `fake_trainers`, real stand-in processes that
start in a moment and do what a test needs)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.conftest import make_settings, seed_project
from tests.support.datasets import DatasetFactory
from training_agent.api.main import create_app
from training_agent.core.records import Project, RecordsStore
from training_agent.core.records.sqlite import SQLiteRecords
from training_agent.core.settings import Settings


@pytest.fixture
def api_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def api_records(api_settings: Settings) -> RecordsStore:
    return SQLiteRecords(api_settings.resolved_database_path)


@pytest.fixture
def app(api_settings: Settings, api_records: RecordsStore) -> FastAPI:
    return create_app(api_settings, records=api_records)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    # raise_server_exceptions=False: see the 500 responses a real client would get.
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def ready_project(api_records: RecordsStore, datasets: DatasetFactory) -> Callable[..., Project]:
    """A project in pending_training with a small valid dataset."""

    def make(**metadata: Any) -> Project:
        return seed_project(api_records, str(datasets.shapes()), metadata=metadata)

    return make


def wait_for_status(
    records: RecordsStore, project_id: UUID, statuses: set[str], timeout_s: float = 120
) -> Project:
    """Poll (bounded) until the project reaches one of `statuses`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        project = records.get_project(project_id)
        if project is not None and project.status in statuses:
            return project
        time.sleep(0.2)
    project = records.get_project(project_id)
    raise AssertionError(f"project still {project.status if project else None} after {timeout_s} s")


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    """Poll (bounded) until `condition()` holds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout_s} s")
        time.sleep(0.05)


@dataclass
class FakeTrainers:
    """What the local executor starts instead of the trainer: `python -c script --project-id ID` (so the
    process's command line names its project, as the real trainer's does)."""

    script: str = "import time; time.sleep(60)"
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)
    processes: list[int] = field(default_factory=list)  # what each start asked for (torchrun's count)

    def start(
        self,
        project_id: UUID,
        *,
        claimed: bool,
        env: Mapping[str, str] | None = None,
        processes: int = 1,
    ) -> subprocess.Popen[bytes]:
        self.processes.append(processes)
        proc = subprocess.Popen(
            [sys.executable, "-c", self.script, "--project-id", str(project_id)],
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
        )
        self.started.append(proc)
        return proc


@pytest.fixture
def fake_trainers(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTrainers]:
    fakes = FakeTrainers()
    monkeypatch.setattr("training_agent.api.executors.local.start_trainer", fakes.start)
    yield fakes
    for proc in fakes.started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def dead_pid() -> int:
    """A pid that no process has any more."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid
