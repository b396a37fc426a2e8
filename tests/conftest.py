"""Shared fixtures: isolated settings, the embedded stores, and small datasets.

Every test starts from an environment with none of the service's variables set, so a developer's shell
(or CI's) cannot change what a test sees.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.datasets import DatasetFactory
from training_agent.core.records import Project, RecordsStore, open_records
from training_agent.core.settings import ENV_PREFIX, Settings, get_settings
from training_agent.core.storage import ObjectStorage

_SERVICE_VARS = (
    "SUPABASE_URL",
    "SUPABASE_KEY",
    "GCP_BUCKET_NAME",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "STORAGE_EMULATOR_HOST",
    "MCP_API_KEY",
    "LOG_LEVEL",
    "LOG_FORMAT",
)


def services_required() -> bool:
    """CI sets this so that a missing server fails the suite instead of skipping tests quietly."""
    return os.environ.get("TRAINING_AGENT_REQUIRE_SERVICES") == "1"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    for name in list(os.environ):
        if name in _SERVICE_VARS or (
            name.startswith(ENV_PREFIX) and name != "TRAINING_AGENT_REQUIRE_SERVICES"
        ):
            monkeypatch.delenv(name)
    # An empty torch hub cache: no test may pick up weights a developer downloaded.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch-home")))
    get_settings.cache_clear()
    # A test that runs `cli.main` in-process has the product set up logging on that test's captured stderr;
    # put the root logger back, or every later test would log into a closed stream.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    get_settings.cache_clear()


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "work_dir": tmp_path / "work",
        "num_workers": 0,
        "device": "cpu",
        "log_every_steps": 1,
        # Most API tests start projects whose dataset URL is a placeholder (gs://bucket/d.zip) that the
        # pre-flight would refuse; tests of the pre-flight (and any that want it) pass preflight=True.
        "preflight": False,
        # Several operators run in one test process: none serves metrics unless its test asks for a port.
        "controller_metrics_port": 0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def records(settings: Settings) -> RecordsStore:
    return open_records(settings)


@pytest.fixture
def storage(settings: Settings) -> ObjectStorage:
    return ObjectStorage(settings)


@pytest.fixture
def datasets(tmp_path: Path) -> DatasetFactory:
    return DatasetFactory(tmp_path / "datasets")


# Small and fast: 16 px images, a few per class, one epoch, from scratch.
FAST_METADATA = {
    "preferred_model": "resnet18",
    "epochs": 1,
    "image_size": 16,
    "batch_size": 8,
    "pretrained": False,
}


def seed_project(
    records: RecordsStore,
    dataset_url: str | None,
    *,
    metadata: dict[str, Any] | None = None,
    status: str = "pending_training",
    name: str = "Demo project",
) -> Project:
    """Play the other agents: a project in `status` and, unless None, its dataset row."""
    project = records.create_project(name, status=status, metadata={**FAST_METADATA, **(metadata or {})})
    if dataset_url is not None:
        records.create_dataset(project.id, gcs_url=dataset_url)
    return project


pytest_plugins = ["tests.support.services"]

# Every process a test starts (trainers, servers, workers) computes on one thread. torch's default is one
# thread per core, and its threads spin-wait for each other: on a 2-core machine where another process holds
# a core, a 200-step run of a small model took 190 s instead of 18 s.
os.environ.setdefault("OMP_NUM_THREADS", "1")
