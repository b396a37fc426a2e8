"""Run each accepted project as a `training-agent train --claimed` child process on this machine.

At most `TRAINING_AGENT_MAX_CONCURRENT_RUNS` run at once; the rest wait in arrival order. A watcher thread per
child settles the project when the child ends: a child that died without reporting (killed, crashed) leaves
the project `failed` with its exit code. Each child's pid is written to the project's metadata
(`training_run`), so a restarted server can tell a run that is still going from one that is gone.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any
from uuid import UUID

from training_agent.api.executors.base import Executor, OnFinish
from training_agent.core.errors import EXIT_RETRY
from training_agent.core.logs import AgentLog
from training_agent.core.records import ProjectStatus, RecordsStore
from training_agent.core.records.models import utcnow
from training_agent.core.runs import RunInfo, RunPhase, run_name
from training_agent.core.settings import Settings
from training_agent.core.trainer_process import start_trainer

logger = logging.getLogger(__name__)

EXECUTOR_NAME = "local"
_STOP_GRACE_S = 30.0  # time for a trainer to finish its step and write its checkpoint
_ORPHAN_POLL_S = 2.0
# How often a trainer that stopped for a retry (EXIT_RETRY: SIGTERM from outside) is started again.
MAX_RETRIES = 2


def pid_runs_project(pid: int, project_id: UUID) -> bool:
    """Whether `pid` is alive and is the trainer of `project_id` (not a recycled pid of another program)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else: check its command line below
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            return str(project_id).encode() in cmdline.read_bytes()
        except OSError:
            return False
    return True  # no /proc (not Linux): trust the pid


class LocalExecutor(Executor):
    name = EXECUTOR_NAME

    def __init__(
        self, settings: Settings, records: RecordsStore, *, on_finish: OnFinish | None = None
    ) -> None:
        self.settings = settings
        self.records = records
        self.on_finish = on_finish
        self.max_concurrent = settings.max_concurrent_runs
        self.host = socket.gethostname()
        self._lock = threading.Lock()
        self._queue: deque[UUID] = deque()
        self._runs: dict[UUID, RunInfo] = {}
        self._procs: dict[UUID, subprocess.Popen[bytes]] = {}
        self._watchers: list[threading.Thread] = []
        self._retries: dict[UUID, int] = {}
        self._closed = False

    # -- submitting and starting ------------------------------------------------------------------------
    def submit(self, project_id: UUID) -> RunInfo:
        with self._lock:
            if self._closed:
                raise RuntimeError("The local executor is shutting down")
            self._runs[project_id] = RunInfo(
                name=run_name(project_id), executor=self.name, phase=RunPhase.QUEUED
            )
            self._queue.append(project_id)
        self._dispatch()
        return self.describe(project_id) or self._runs[project_id]

    def _dispatch(self) -> None:
        """Start queued runs while there are free slots."""
        while True:
            with self._lock:
                if self._closed or not self._queue or len(self._procs) >= self.max_concurrent:
                    return
                project_id = self._queue.popleft()
                # Reserve the slot before leaving the lock; the process is filled in by _start.
                self._procs[project_id] = None  # type: ignore[assignment]
            self._start(project_id)

    def _start(self, project_id: UUID) -> None:
        try:
            proc = start_trainer(project_id, claimed=True, env={**os.environ, **self.settings.to_env()})
        except OSError as exc:
            with self._lock:
                self._procs.pop(project_id, None)
            self._settle(project_id, None, f"The trainer process could not be started: {exc}")
            return
        started = utcnow()
        with self._lock:
            self._procs[project_id] = proc
            self._runs[project_id] = self._runs[project_id].model_copy(
                update={"phase": RunPhase.RUNNING, "pid": proc.pid, "started_at": started}
            )
        self._remember_pid(project_id, proc.pid, started.isoformat())
        watcher = threading.Thread(
            target=self._watch, args=(project_id, proc), daemon=True, name=f"watch-{project_id}"
        )
        watcher.start()
        # Only the live watchers matter (shutdown joins them); a long-lived server must not keep them all.
        self._watchers = [w for w in self._watchers if w.is_alive()] + [watcher]

    def _remember_pid(self, project_id: UUID, pid: int, started_at: str) -> None:
        run = {
            "name": run_name(project_id),
            "executor": self.name,
            "host": self.host,
            "pid": pid,
            "started_at": started_at,
        }
        try:
            self.records.transition_project(
                project_id,
                from_status=ProjectStatus.TRAINING.value,
                to_status=ProjectStatus.TRAINING.value,
                metadata_patch={"training_run": run},
            )
        except Exception:
            logger.warning("Could not record pid %d for project %s", pid, project_id, exc_info=True)

    def _watch(self, project_id: UUID, proc: subprocess.Popen[bytes]) -> None:
        code = proc.wait()
        retry = code == EXIT_RETRY and self._retry(project_id)
        if not retry:
            self._settle(project_id, code, None)
        with self._lock:
            self._procs.pop(project_id, None)
        self._dispatch()

    def _retry(self, project_id: UUID) -> bool:
        """A trainer stopped by a SIGTERM from outside saved a checkpoint: start it again at the head of
        the queue (it resumes), unless the server is stopping or it has been retried enough."""
        project = self.records.get_project(project_id)
        with self._lock:
            attempt = self._retries.get(project_id, 0) + 1
            if (
                self._closed
                or attempt > MAX_RETRIES
                or project is None
                or project.status != ProjectStatus.TRAINING.value
            ):
                return False
            self._retries[project_id] = attempt
            self._queue.appendleft(project_id)
            self._runs[project_id] = self._runs[project_id].model_copy(update={"phase": RunPhase.QUEUED})
        logger.warning("The trainer of project %s was stopped; retry %d resumes it", project_id, attempt)
        AgentLog(self.records, project_id, self.settings.agent_name).warning(
            f"Trainer stopped from outside; starting it again (retry {attempt}/{MAX_RETRIES}) "
            "to resume from its checkpoint",
            attempt=attempt,
        )
        return True

    # -- settling ---------------------------------------------------------------------------------------
    def _settle(self, project_id: UUID, exit_code: int | None, reason: str | None) -> None:
        """Record how a run ended. The trainer normally reports its own outcome; if the project is still
        `training`, it could not (killed, crashed, never started), so the reason is written here."""
        phase = RunPhase.FAILED
        message = None
        try:
            project = self.records.get_project(project_id)
            if project is not None and project.status == ProjectStatus.TRAINING.value:
                if exit_code == EXIT_RETRY and self._closed:
                    reason = reason or "The server stopped during the run; start the project again"
                message = (
                    reason or f"The trainer process exited with code {exit_code} without reporting a result"
                )
                self._fail_project(project_id, message, exit_code)
            elif project is not None and project.status == ProjectStatus.PENDING_EVALUATION.value:
                phase = RunPhase.SUCCEEDED
        except Exception:
            logger.exception("Could not settle the run of project %s", project_id)
        with self._lock:
            info = self._runs.get(project_id)
            if info is not None:
                self._runs[project_id] = info.model_copy(
                    update={
                        "phase": phase,
                        "finished_at": utcnow(),
                        "exit_code": exit_code,
                        "message": message,
                    }
                )
        if self.on_finish:
            self.on_finish(project_id, phase)

    def _fail_project(self, project_id: UUID, message: str, exit_code: int | None) -> None:
        error = {
            "message": message,
            "type": "WorkerError",
            "step": "worker",
            "exit_code": exit_code,
            "traceback": None,
            "failed_at": utcnow().isoformat(),
        }
        AgentLog(self.records, project_id, self.settings.agent_name).error(message, **error)
        self.records.transition_project(
            project_id,
            from_status=ProjectStatus.TRAINING.value,
            to_status=ProjectStatus.FAILED.value,
            metadata_patch={"error": error},
        )

    def cancel(self, project_id: UUID) -> bool:
        """Fail the project as cancelled first (so the trainer's own "interrupted" cannot win), then stop
        its process or take it out of the queue."""
        with self._lock:
            queued = project_id in self._queue
            if queued:
                self._queue.remove(project_id)
            proc = self._procs.get(project_id)
        if not queued and proc is None:
            return False
        self._fail_project(project_id, "Cancelled by request", None)
        if queued:
            self._settle(project_id, None, "Cancelled by request")
        elif proc is not None:
            proc.send_signal(signal.SIGTERM)
        return True

    # -- reporting --------------------------------------------------------------------------------------
    def describe(self, project_id: UUID) -> RunInfo | None:
        with self._lock:
            info = self._runs.get(project_id)
            if info is None:
                return None
            if info.phase == RunPhase.QUEUED and project_id in self._queue:
                return info.model_copy(update={"queue_position": list(self._queue).index(project_id) + 1})
            return info

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {
                "running": sum(1 for p in self._procs.values() if p is not None),
                "queued": len(self._queue),
            }

    # -- restarts and shutdown --------------------------------------------------------------------------
    def recover(self) -> None:
        """Settle the local runs a previous server process left in `training`: one whose trainer is still
        alive is watched until it ends; one whose trainer is gone, or that never started, is failed."""
        for project in self.records.projects_in_status(ProjectStatus.TRAINING.value):
            run: dict[str, Any] = project.metadata.get("training_run") or {}
            if run.get("executor", self.name) != self.name or project.id in self._runs:
                continue
            pid = run.get("pid")
            if isinstance(pid, int) and run.get("host") == self.host and pid_runs_project(pid, project.id):
                logger.info("Adopting the running trainer of project %s (pid %d)", project.id, pid)
                self._runs[project.id] = RunInfo(
                    name=run_name(project.id), executor=self.name, phase=RunPhase.RUNNING, pid=pid
                )
                threading.Thread(target=self._watch_orphan, args=(project.id, pid), daemon=True).start()
                continue
            where = f"pid {pid} on {run.get('host')}" if pid else "not started yet"
            self._fail_project(
                project.id,
                f"The training process was lost when the server stopped ({where}); start the project again",
                None,
            )

    def _watch_orphan(self, project_id: UUID, pid: int) -> None:
        # Not our child: it cannot be waited for, only polled.
        while pid_runs_project(pid, project_id):
            time.sleep(_ORPHAN_POLL_S)
        self._settle(project_id, None, f"The trainer process (pid {pid}) ended without reporting a result")

    def shutdown(self) -> None:
        """Stop taking runs; ask running trainers to stop (they mark their projects failed themselves) and
        fail the queued ones, so nothing is left `training` with nobody working on it."""
        with self._lock:
            self._closed = True
            queued = list(self._queue)
            self._queue.clear()
            procs = [p for p in self._procs.values() if p is not None]
        for project_id in queued:
            self._settle(
                project_id, None, "The server stopped before this run started; start the project again"
            )
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_S
        for proc in procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
        for watcher in self._watchers:
            watcher.join(timeout=5)
