"""Restart safety: runs a previous server process left in `training` are settled at start-up (a live trainer
is adopted: followed, cancellable, holding its slot); shutdown stops only trainers still training; a retry
stays the same run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.api.conftest import FakeTrainers, dead_pid, wait_for_status, wait_until
from tests.conftest import make_settings, seed_project
from training_agent.api.main import create_app
from training_agent.core.errors import EXIT_RETRY
from training_agent.core.lease import new_run, run_of
from training_agent.core.records import Project, RecordsStore
from training_agent.core.records.sqlite import SQLiteRecords
from training_agent.core.runs import RunPhase
from training_agent.core.settings import Settings
from training_agent.core.trainer_process import start_trainer


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
        metadata_patch={
            "training_run": {**new_run(project.id, "local"), "host": socket.gethostname(), "pid": proc.pid}
        },
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


def left_running(records: RecordsStore) -> tuple[Project, subprocess.Popen[bytes]]:
    """A project whose trainer a previous server started and left running (a stand-in that sleeps)."""
    project = seed_project(records, "gs://bucket/d.zip", status="training")
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "--project-id", str(project.id)]
    )
    run = {**new_run(project.id, "local"), "host": socket.gethostname(), "pid": proc.pid}
    records.transition_project(
        project.id, from_status="training", to_status="training", metadata_patch={"training_run": run}
    )
    return project, proc


def test_adopted_run_holds_a_slot_and_can_be_cancelled(
    app: FastAPI, api_records: RecordsStore, fake_trainers: FakeTrainers
) -> None:
    adopted, proc = left_running(api_records)
    waiting = seed_project(api_records, "gs://bucket/d.zip")
    try:
        with TestClient(app) as client:
            executor = client.app.state.executor  # type: ignore[attr-defined]
            assert executor.counts() == {"running": 1, "queued": 0}
            # TRAINING_AGENT_MAX_CONCURRENT_RUNS is 1 and the adopted trainer holds it: the next run waits.
            body = client.post("/agents/training/start", json={"project_id": str(waiting.id)}).json()
            assert (body["phase"], body["queue_position"]) == ("Queued", 1)

            response = client.delete(f"/agents/training/{adopted.id}")
            assert response.status_code == 200, response.text
            assert proc.wait(timeout=10) == -signal.SIGTERM  # not our child: signalled by pid
            stored = api_records.get_project(adopted.id)
            assert stored is not None and stored.status == "failed"
            assert stored.metadata["error"]["message"] == "Cancelled by request"
            wait_until(lambda: executor.describe(waiting.id).phase == RunPhase.RUNNING, "started")
            assert executor.describe(adopted.id).phase == RunPhase.CANCELLED
            assert executor.counts() == {"running": 1, "queued": 0}
    finally:
        proc.kill()
        proc.wait()


def test_shutdown_does_not_interrupt_a_trainer_that_recorded_its_result(
    tmp_path: Path, fake_trainers: FakeTrainers
) -> None:
    settings = make_settings(tmp_path, max_concurrent_runs=2)
    records = SQLiteRecords(settings.resolved_database_path)
    finished, training = seed_project(records, "gs://b/d.zip"), seed_project(records, "gs://b/d.zip")
    # `finished`'s trainer exits 0 a second after its result is recorded (the marker), unless a signal ends
    # it first; the other one runs on. Waiting on the marker, not a fixed time: an exit before the result
    # would make it a failed run.
    recorded = tmp_path / "recorded"
    fake_trainers.script = (
        "import pathlib, sys, time\n"
        f"if sys.argv[-1] == {str(finished.id)!r}:\n"
        f"    deadline = time.monotonic() + 60\n"
        f"    while not pathlib.Path({str(recorded)!r}).exists() and time.monotonic() < deadline:\n"
        "        time.sleep(0.05)\n"
        "    time.sleep(1)\n"
        "else:\n"
        "    time.sleep(60)\n"
    )
    with TestClient(create_app(settings, records=records)) as client:
        for project in (finished, training):
            assert (
                client.post("/agents/training/start", json={"project_id": str(project.id)}).status_code == 200
            )
        executor = client.app.state.executor  # type: ignore[attr-defined]
        # The trainer recorded success and is exiting when the server stops.
        records.transition_project(finished.id, from_status="training", to_status="pending_evaluation")
        recorded.touch()
    assert executor.describe(finished.id).exit_code == 0  # waited for, never sent SIGTERM
    assert executor.describe(finished.id).phase == RunPhase.SUCCEEDED
    assert executor.describe(training.id).exit_code == -signal.SIGTERM  # still training: asked to stop
    assert records.get_project(finished.id).status == "pending_evaluation"  # type: ignore[union-attr]


def test_a_retry_is_the_same_run(
    app: FastAPI, api_records: RecordsStore, fake_trainers: FakeTrainers
) -> None:
    # The first trainer stops for a retry (as after SIGTERM from outside), the second keeps running.
    fake_trainers.script = (
        "import os, sys, time\n"
        f"marker = {str(app.state.settings.work_dir / 'stopped-once')!r}\n"
        "if not os.path.exists(marker):\n"
        "    os.makedirs(os.path.dirname(marker), exist_ok=True)\n"
        "    open(marker, 'w').close()\n"
        f"    sys.exit({EXIT_RETRY})\n"
        "time.sleep(60)\n"
    )
    project = seed_project(api_records, "gs://bucket/d.zip")
    with TestClient(app) as client:
        client.post("/agents/training/start", json={"project_id": str(project.id)})
        accepted = run_of(api_records.get_project(project.id))  # type: ignore[arg-type]
        executor = client.app.state.executor  # type: ignore[attr-defined]
        wait_until(lambda: len(fake_trainers.started) == 2, "started again")
        second = fake_trainers.started[1].pid
        wait_until(lambda: run_of(api_records.get_project(project.id)).get("pid") == second, "recorded")  # type: ignore[arg-type]
        run = run_of(api_records.get_project(project.id))  # type: ignore[arg-type]
        assert run["run_id"] == accepted["run_id"] and run["accepted_at"] == accepted["accepted_at"]
        assert run["executor"] == "local" and run["host"] == socket.gethostname() and run["started_at"]
        assert executor.describe(project.id).phase == RunPhase.RUNNING
        assert api_records.get_project(project.id).status == "training"  # type: ignore[union-attr]
