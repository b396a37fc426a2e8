"""An app per test on the embedded stores, served through Starlette's TestClient with its lifespan, so the
real local executor starts real trainer processes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
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
