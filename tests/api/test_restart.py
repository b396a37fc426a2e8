"""Restart safety: runs a previous server process left in `training` are settled at start-up."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.api.conftest import wait_for_status
from tests.conftest import seed_project
from training_agent.core.errors import EXIT_RETRY
from training_agent.core.records import Project, RecordsStore
from training_agent.core.runs import RunPhase
from training_agent.core.settings import Settings
from training_agent.core.trainer_process import start_trainer


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def left_training(records: RecordsStore, run: dict[str, Any]) -> Project:
    return seed_project(records, "gs://bucket/d.zip", status="training", metadata={"training_run": run})


def test_run_whose_process_is_gone_is_failed(app: FastAPI, api_records: RecordsStore) -> None:
    pid = dead_pid()
    project = left_training(api_records, {"executor": "local", "host": socket.gethostname(), "pid": pid})
    with TestClient(app):
        stored = api_records.get_project(project.id)
    assert stored is not None and stored.status == "failed"
    assert stored.metadata["error"]["message"] == (
        f"The training process was lost when the server stopped (pid {pid} on {socket.gethostname()}); "
        "start the project again"
    )
    assert api_records.recent_logs(project.id)[0].log_level == "error"


def test_run_that_never_started_is_failed(app: FastAPI, api_records: RecordsStore) -> None:
    project = left_training(api_records, {"executor": "local", "name": "tr-x"})
    with TestClient(app):
        stored = api_records.get_project(project.id)
    assert stored is not None and stored.status == "failed"
    assert "(not started yet)" in stored.metadata["error"]["message"]


def test_pid_reused_by_another_program_is_not_mistaken_for_the_trainer(
    app: FastAPI, api_records: RecordsStore
) -> None:
    project = left_training(
        api_records, {"executor": "local", "host": socket.gethostname(), "pid": os.getpid()}
    )
    with TestClient(app):
        assert api_records.get_project(project.id).status == "failed"  # type: ignore[union-attr]


def test_runs_of_other_executors_are_left_alone(app: FastAPI, api_records: RecordsStore) -> None:
    project = left_training(api_records, {"executor": "kubernetes", "name": "tr-x"})
    with TestClient(app):
        assert api_records.get_project(project.id).status == "training"  # type: ignore[union-attr]


def test_live_trainer_is_adopted_and_followed(
    app: FastAPI, api_settings: Settings, api_records: RecordsStore, ready_project: Callable[..., Project]
) -> None:
    project = ready_project(epochs=3)
    api_records.transition_project(project.id, from_status="pending_training", to_status="training")
    # The trainer a crashed server left behind, still running.
    proc = start_trainer(project.id, claimed=True, env={**os.environ, **api_settings.to_env()})
    api_records.transition_project(
        project.id,
        from_status="training",
        to_status="training",
        metadata_patch={"training_run": {"executor": "local", "host": socket.gethostname(), "pid": proc.pid}},
    )
    try:
        with TestClient(app) as client:
            executor = client.app.state.executor  # type: ignore[attr-defined]
            adopted = executor.describe(project.id)
            assert adopted is not None and adopted.pid == proc.pid
            assert adopted.phase in (RunPhase.RUNNING, RunPhase.SUCCEEDED)
            assert wait_for_status(api_records, project.id, {"pending_evaluation", "failed"}).status == (
                "pending_evaluation"
            )
            proc.wait(timeout=60)
            deadline = time.monotonic() + 10
            while executor.describe(project.id).phase == RunPhase.RUNNING and time.monotonic() < deadline:
                time.sleep(0.1)
            assert executor.describe(project.id).phase == RunPhase.SUCCEEDED
    finally:
        proc.kill()
        proc.wait()


def test_shutdown_stops_running_and_queued_runs(
    app: FastAPI, api_records: RecordsStore, ready_project: Callable[..., Project]
) -> None:
    running, queued = ready_project(epochs=500), ready_project()
    with TestClient(app) as client:
        client.post("/agents/training/start", json={"project_id": str(running.id)})
        client.post("/agents/training/start", json={"project_id": str(queued.id)})
        executor = client.app.state.executor  # type: ignore[attr-defined]
        deadline = time.monotonic() + 60
        # Wait until the trainer is past its start-up, so SIGTERM meets the training loop.
        while time.monotonic() < deadline and not any(
            log.message.startswith("Dataset structure") for log in api_records.recent_logs(running.id)
        ):
            time.sleep(0.1)
        assert executor.describe(queued.id).phase == RunPhase.QUEUED
    # Leaving the client shut the app down.
    stopped = api_records.get_project(running.id)
    assert stopped is not None and stopped.status == "failed"
    message = stopped.metadata["error"]["message"]
    assert message == "The server stopped during the run; start the project again"
    assert stopped.metadata["error"]["exit_code"] == EXIT_RETRY  # it checkpointed and stopped cleanly
    never = api_records.get_project(queued.id)
    assert never is not None and never.status == "failed"
    assert (
        never.metadata["error"]["message"]
        == "The server stopped before this run started; start the project again"
    )
