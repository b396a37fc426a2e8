"""Faults and concurrency through the API with the local executor: trainer children killed at a step (the
executor settles or retries them), fifty concurrent starts, and two same-name projects trained at once."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_settings, seed_project
from tests.faults.conftest import HOOKS, METADATA, World
from training_agent.api.main import create_app
from training_agent.core.records import Project

pytestmark = pytest.mark.faults

START = "/agents/training/start"


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    settings = make_settings(
        world.tmp,
        # Nothing here waits for a lease to run out: a long one keeps a busy machine's reaper off live runs.
        run_lease_seconds=60,
        max_concurrent_runs=2,
        precision="fp32",  # no bf16 warm-up in the children (see World.env)
    )
    with TestClient(
        create_app(settings, records=world.records), raise_server_exceptions=False
    ) as test_client:
        yield test_client


def wait_settled(world: World, project_id: UUID, timeout_s: float = 240) -> Project:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        project = world.records.get_project(project_id)
        if project is not None and project.status in ("pending_evaluation", "failed"):
            return project
        time.sleep(0.1)
    raise AssertionError(f"project {project_id} did not settle in {timeout_s} s")


def wait_idle(client: TestClient, timeout_s: float = 30) -> None:
    """Until the executor holds no run: its watcher has settled and cleaned up after the last child (a fixed
    sleep lost that race under load)."""
    executor = client.app.state.executor  # type: ignore[attr-defined]
    assert executor.wait_settled(timeout_s), f"runs still settling after {timeout_s} s"


def inject(monkeypatch: pytest.MonkeyPatch, world: World, point: str, sig: str) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HOOKS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("FAULT_AT", point)
    monkeypatch.setenv("FAULT_SIGNAL", sig)
    monkeypatch.setenv("FAULT_ONCE", str(world.tmp / "fault-fired"))


@pytest.mark.parametrize("point", ["epoch:1", "model_row"])
def test_child_killed(world: World, client: TestClient, monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    inject(monkeypatch, world, point, "KILL")
    project = world.project()
    assert client.post(START, json={"project_id": str(project.id)}).status_code == 200
    settled = wait_settled(world, project.id)
    wait_idle(client)
    assert world.assert_settled(project) == settled.status == "failed"
    assert (
        settled.metadata["error"]["message"]
        == "The trainer process exited with code -9 without reporting a result"
    )


@pytest.mark.parametrize("point", ["epoch:1"])
def test_child_terminated_is_retried_and_resumes(
    world: World, client: TestClient, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    inject(monkeypatch, world, point, "TERM")
    project = world.project()
    assert client.post(START, json={"project_id": str(project.id)}).status_code == 200
    assert wait_settled(world, project.id).status == "pending_evaluation"
    wait_idle(client)
    world.assert_settled(project)
    stored = world.records.get_project(project.id)
    assert stored is not None
    [model] = world.records.list_models(project.id)
    assert (
        model.metadata["attempt"] == 2
        and model.metadata["run_id"] == stored.metadata["training_run"]["run_id"]
    )


def test_fifty_concurrent_starts_make_one_run(world: World, client: TestClient) -> None:
    project = world.project()
    with ThreadPoolExecutor(max_workers=50) as pool:
        codes = list(
            pool.map(
                lambda _: client.post(START, json={"project_id": str(project.id)}).status_code, range(50)
            )
        )
    assert codes.count(200) == 1 and set(codes) <= {200, 400, 409}, codes
    assert wait_settled(world, project.id).status == "pending_evaluation"
    wait_idle(client)
    world.assert_settled(project)
    messages = [log.message for log in world.records.recent_logs(project.id, limit=500)]
    assert messages.count("Training initiated") == 1 and messages.count("Trainer started") == 1


def test_same_name_projects_trained_at_once(world: World, client: TestClient) -> None:
    """ "cats/dogs" and "cats dogs" (and the bystander, also "cats dogs") share one safe name: each gets its
    own model object, and every row points at its own project's model."""
    first = world.project()
    second = seed_project(world.records, world.dataset, metadata=METADATA, name="cats dogs")
    for project in (first, second):
        assert client.post(START, json={"project_id": str(project.id)}).status_code == 200
    for project in (first, second):
        assert wait_settled(world, project.id).status == "pending_evaluation"
    wait_idle(client)
    urls = set()
    for project in (first, second):
        world.assert_settled(project)
        [model] = world.records.list_models(project.id)
        info = world.storage.stat(model.gcs_url)
        assert info is not None and info.owner_project == str(project.id)
        urls.add(model.gcs_url)
    assert len(urls) == 2
    assert all(
        str(p.id) in url
        for p, url in zip((first, second), sorted(urls, key=lambda u: str(first.id) not in u), strict=True)
    )
