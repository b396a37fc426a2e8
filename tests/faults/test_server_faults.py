"""The API server SIGKILLed at each step of a start and of a cancel, then started again.

`training-agent serve` runs as a real process (the local executor, the World's embedded records and local
bucket) with tests/faults/server_hooks on its PYTHONPATH, whose `sitecustomize.py` makes it SIGKILL itself at
the named point (see that file). A second `serve`, without the hook, must then settle every project: a run
whose trainer never started is failed (recover), a trainer orphaned by the killed server is adopted and
followed to its end, and a trainer whose run was cancelled stops itself when its heartbeat finds the record
is no longer its run's. After each: nothing `training` without a live lease, no work folder or checkpoint
left, no duplicate `models` rows, the bystander untouched (`World.assert_settled`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from tests.conftest import seed_project
from tests.faults.conftest import METADATA, World
from tests.support.postgres import free_port
from training_agent.core.records import Project

pytestmark = pytest.mark.faults

SERVER_HOOKS = Path(__file__).parent / "server_hooks"
# bf16 autocast's first steps on a CPU cost seconds of kernel warm-up; no fault here depends on the precision.
FAST_TRAINER = {"TRAINING_AGENT_PRECISION": "fp32"}
# No case here waits for a lease to run out: a lease long enough that a busy 2-core machine (a slow beat, a
# locked SQLite file) never gets a live trainer reaped, and short enough that a cancelled run's trainer
# notices within a couple of seconds (it beats every quarter lease).
SERVER_ENV = {**FAST_TRAINER, "TRAINING_AGENT_RUN_LEASE_SECONDS": "8"}
START = "/agents/training/start"
LOST_BEFORE_START = (
    "The training process was lost when the server stopped (not started yet); start the project again"
)


class Serve:
    """`training-agent serve` in its own process on a free port, its log (and its trainers') in a file."""

    def __init__(self, world: World, *, fault: str = "", **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = world.env(**{"TRAINING_AGENT_API_PORT": str(self.port), **SERVER_ENV, **env})
        if fault:
            path = os.pathsep.join([str(SERVER_HOOKS), full_env.get("PYTHONPATH", "")])
            full_env |= {"PYTHONPATH": path, "SERVER_FAULT_AT": fault}
        self.log_path = world.tmp / f"serve-{self.port}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "training_agent", "serve"],
                env=full_env,
                cwd=world.tmp,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready(self) -> bool:
        """Whether it answers /health (its start-up, recovery included, is done); raises if it died."""
        if self.proc.poll() is not None:
            raise AssertionError(f"serve exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
        try:
            return httpx.get(self.url + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        """A request; None when the server died before answering (the fault)."""
        try:
            return httpx.request(method, self.url + path, timeout=30, **kwargs)
        except httpx.HTTPError:
            return None

    def killed(self) -> bool:
        return self.proc.poll() == -signal.SIGKILL

    def stop(self) -> int:
        """SIGTERM, as a supervisor stops it; bounded, then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)


def _pids_with(needle: bytes, file: str) -> list[int]:
    """Live processes whose /proc/<pid>/<file> (cmdline, environ) holds `needle`; never this one."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / file).read_bytes():
                pids.append(int(entry.name))
    return pids


def trainer_pids(project_id: UUID) -> list[int]:
    """Live trainer processes of the project (orphans of a killed server included)."""
    return _pids_with(f"--project-id\0{project_id}".encode(), "cmdline")


def world_pids(world: World) -> list[int]:
    """Live processes started on the World's stores: its servers and their trainers, orphans included."""
    return _pids_with(f"TRAINING_AGENT_DATA_DIR={world.settings.data_dir}\0".encode(), "environ")


def wait_until(condition: Callable[[], object], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout_s} s")
        time.sleep(0.1)


@pytest.fixture
def servers(world: World) -> Iterator[Callable[..., Serve]]:
    """Start `serve` processes; at the end every one of them, and every trainer of the World's projects
    (orphans included), is gone."""
    started: list[Serve] = []

    def start(**kwargs: Any) -> Serve:
        serve = Serve(world, **kwargs)
        started.append(serve)
        return serve

    yield start
    for serve in started:
        serve.stop()
    for pid in world_pids(world):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def started_and_killed(servers: Callable[..., Serve], project: Project, fault: str) -> None:
    """A server with the fault takes the project's start and dies at `fault` before it answers."""
    first = servers(fault=fault)
    wait_until(first.ready, "the first server ready")
    assert first.request("POST", START, json={"project_id": str(project.id)}) is None
    wait_until(first.killed, f"the server killed at {fault}", timeout_s=10)


def project_of(world: World, project: Project) -> Project:
    stored = world.records.get_project(project.id)
    assert stored is not None
    return stored


def messages(world: World, project: Project) -> list[str]:
    return [log.message for log in world.records.recent_logs(project.id, limit=500)]


@pytest.mark.parametrize("fault", ["claimed", "initiated"])
def test_killed_before_the_trainer_started(world: World, servers: Callable[..., Serve], fault: str) -> None:
    """The project is `training` with a run record and no trainer: the next server's recovery fails it
    before it takes requests."""
    project = world.project()
    started_and_killed(servers, project, fault)
    assert project_of(world, project).status == "training"
    second = servers()
    wait_until(second.ready, "the second server ready")
    stored = project_of(world, project)
    assert (stored.status, stored.metadata["error"]["message"]) == ("failed", LOST_BEFORE_START)
    assert messages(world, project).count("Training initiated") == (1 if fault == "initiated" else 0)
    assert second.stop() == 0
    world.assert_settled(project)


def test_killed_after_spawning_the_trainer_it_is_adopted(world: World, servers: Callable[..., Serve]) -> None:
    """The trainer outlives the server (its own session) and writes its pid with its first heartbeat; the
    next server adopts it, follows it to its end and reports the run Succeeded."""
    project = world.project()
    started_and_killed(servers, project, "spawned")
    wait_until(
        lambda: project_of(world, project).metadata["training_run"].get("heartbeat_at"),
        "the orphaned trainer's first heartbeat",
    )
    [orphan] = trainer_pids(project.id)
    # Held until the new server is up: a trainer that finished while it started would leave nothing to adopt.
    os.kill(orphan, signal.SIGSTOP)
    try:
        second = servers()
        wait_until(second.ready, "the second server ready")
    finally:
        os.kill(orphan, signal.SIGCONT)
    assert f"Adopting the running trainer of project {project.id} (pid {orphan})" in second.log()
    assert {second.proc.pid, orphan} <= set(world_pids(world))  # what the teardown would kill

    def run_phase() -> str:
        response = second.request("GET", f"/agents/training/status/{project.id}")
        assert response is not None and response.status_code == 200
        return str(response.json()["run"]["phase"])

    wait_until(lambda: not trainer_pids(project.id), "the adopted trainer's end", timeout_s=120)
    wait_until(lambda: run_phase() == "Succeeded", "the adopted run Succeeded", timeout_s=10)
    assert second.stop() == 0
    assert world.assert_settled(project) == "pending_evaluation"
    assert messages(world, project).count("Trainer started") == 1


def test_killed_between_cancel_and_signal_the_trainer_stops_itself(
    world: World, servers: Callable[..., Serve]
) -> None:
    """The cancel failed the project as cancelled and the server died before it signalled the trainer: the
    trainer's heartbeat finds the record is no longer its run's, it stops and removes what it wrote; the
    next server finds nothing to adopt."""
    # Enough epochs that the run is still in its training loop when the cancel comes.
    project = seed_project(
        world.records, world.dataset, metadata={**METADATA, "epochs": 60}, name="cats/dogs"
    )
    first = servers(fault="cancel_failed")
    wait_until(first.ready, "the first server ready")
    response = first.request("POST", START, json={"project_id": str(project.id)})
    assert response is not None and response.status_code == 200, response
    wait_until(
        lambda: any(m.startswith("Epoch 1/") for m in messages(world, project)), "epoch 1", timeout_s=120
    )
    assert first.request("DELETE", f"/agents/training/{project.id}") is None
    wait_until(first.killed, "the server killed at cancel_failed", timeout_s=10)
    wait_until(lambda: not trainer_pids(project.id), "the orphaned trainer gone", timeout_s=60)
    second = servers()  # (a restart while the orphan still runs: the next test)
    wait_until(second.ready, "the second server ready")
    stored = project_of(world, project)
    assert stored.status == "failed"
    assert (stored.metadata["error"]["message"], stored.metadata["error"]["type"]) == (
        "Cancelled by request",
        "Cancelled",
    )
    assert any("the run had ended meanwhile (cancelled or reaped)" in m for m in messages(world, project))
    assert not any(m.startswith("Epoch 60/") for m in messages(world, project))
    assert world.records.list_models(project.id) == []
    assert second.stop() == 0
    world.assert_settled(project)


def test_restarted_while_the_cancelled_trainer_still_runs(
    world: World, servers: Callable[..., Serve]
) -> None:
    """The same fault, but the new server starts before the orphaned trainer has noticed the cancel (it is
    held with SIGSTOP until the new server is up, as a busy machine would hold it): the new server's
    start-up sweep and the trainer's own stop then both work on the run's files."""
    project = seed_project(
        world.records, world.dataset, metadata={**METADATA, "epochs": 60}, name="cats/dogs"
    )
    first = servers(fault="cancel_failed")
    wait_until(first.ready, "the first server ready")
    response = first.request("POST", START, json={"project_id": str(project.id)})
    assert response is not None and response.status_code == 200, response
    wait_until(
        lambda: any(m.startswith("Epoch 1/") for m in messages(world, project)), "epoch 1", timeout_s=120
    )
    [orphan] = trainer_pids(project.id)
    os.kill(orphan, signal.SIGSTOP)
    try:
        assert first.request("DELETE", f"/agents/training/{project.id}") is None
        wait_until(first.killed, "the server killed at cancel_failed", timeout_s=10)
        second = servers()
        wait_until(second.ready, "the second server ready")
    finally:
        os.kill(orphan, signal.SIGCONT)
    wait_until(lambda: not trainer_pids(project.id), "the orphaned trainer gone", timeout_s=60)
    stored = project_of(world, project)
    assert (stored.status, stored.metadata["error"]["type"]) == ("failed", "Cancelled")
    assert second.stop() == 0
    world.assert_settled(project)
