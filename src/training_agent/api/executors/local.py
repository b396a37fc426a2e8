"""Run each accepted project as a `training-agent train --claimed` child process on this machine.

At most `TRAINING_AGENT_MAX_CONCURRENT_RUNS` trainers run at once — this server's children and the trainers
it adopted from a previous server process alike; the rest wait in arrival order. A watcher thread per trainer
settles the project when it ends: one that died without reporting (killed, crashed) leaves the project
`failed` with its exit code, and what the run left behind (work folder, checkpoint) is removed.

The run record (`metadata.training_run`, core/lease.py) is written by the API's claim; this executor only adds
the child's pid and host, so a restarted server can tell a run that is still going from one that is gone. A
retry after SIGTERM is the same run (same run id), so the trainer resumes its checkpoint.
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
from datetime import datetime
from typing import Any
from uuid import UUID

from training_agent.api.executors.adoption import LiveTrainer, left_behind
from training_agent.api.executors.base import CANCELLED_ERROR_TYPE, Executor, OnFinish
from training_agent.core.callbacks import CallbackSender
from training_agent.core.errors import EXIT_RETRY
from training_agent.core.lease import fail_run, run_id_of, update_run
from training_agent.core.logs import AgentLog
from training_agent.core.processes import pid_runs_project, signal_trainer
from training_agent.core.records import ProjectStatus, RecordsStore
from training_agent.core.records.models import utcnow
from training_agent.core.runs import RunInfo, RunPhase, run_name
from training_agent.core.settings import Settings
from training_agent.core.storage import ObjectStorage
from training_agent.core.sweep import remove_run_leftovers
from training_agent.core.trainer_process import start_trainer, trainer_env

logger = logging.getLogger(__name__)

EXECUTOR_NAME = "local"
CANCELLED_MESSAGE = "Cancelled by request"
_STOP_GRACE_S = 30.0  # time for a trainer to finish its step and write its checkpoint
_SETTLE_WAIT_S = 10.0  # once its process is gone, settling a run is a few record writes and a folder removal
_ADOPTED_POLL_S = 1.0  # an adopted trainer is not our child: it can only be polled
# How often a trainer that stopped for a retry (EXIT_RETRY: SIGTERM from outside) is started again.
MAX_RETRIES = 2


class LocalExecutor(Executor):
    name = EXECUTOR_NAME

    def __init__(
        self, settings: Settings, records: RecordsStore, *, on_finish: OnFinish | None = None
    ) -> None:
        self.settings = settings
        self.records = records
        self.storage = ObjectStorage(settings)
        self.on_finish = on_finish
        self.max_concurrent = settings.max_concurrent_runs
        self.host = socket.gethostname()
        self._lock = threading.Lock()
        self._queue: deque[UUID] = deque()
        self._runs: dict[UUID, RunInfo] = {}
        # Children by project; None while the slot is reserved and the process is being started.
        self._procs: dict[UUID, subprocess.Popen[bytes] | None] = {}
        self._adopted: dict[UUID, int] = {}  # trainers of a previous server process, by pid
        self._run_ids: dict[UUID, str | None] = {}
        self._cancelled: set[UUID] = set()
        self._watchers: list[threading.Thread] = []
        self._retries: dict[UUID, int] = {}
        self._closed = False
        self._stopping = threading.Event()
        # Every run this executor watches ends in `_settle` (or, left behind by a previous server, in
        # `recover`): the one place that reports it to its start's callback URL.
        self.callbacks = CallbackSender(settings, records)

    # -- submitting and starting ------------------------------------------------------------------------
    def submit(self, project_id: UUID) -> RunInfo:
        project = self.records.get_project(project_id)
        with self._lock:
            if self._closed:
                raise RuntimeError("The local executor is shutting down")
            self._runs[project_id] = RunInfo(
                name=run_name(project_id), executor=self.name, phase=RunPhase.QUEUED
            )
            self._run_ids[project_id] = run_id_of(project) if project is not None else None
            self._queue.append(project_id)
        self._dispatch()
        return self.describe(project_id) or self._runs[project_id]

    def _dispatch(self) -> None:
        """Start queued runs while there are free slots (adopted trainers hold slots too)."""
        while True:
            with self._lock:
                running = len(self._procs) + len(self._adopted)
                if self._closed or not self._queue or running >= self.max_concurrent:
                    return
                project_id = self._queue.popleft()
                self._procs[project_id] = None  # reserve the slot before leaving the lock
            self._start(project_id)

    def _start(self, project_id: UUID) -> None:
        try:
            proc = start_trainer(
                project_id,
                claimed=True,
                env=trainer_env(self.settings, os.environ, concurrent_runs=self.max_concurrent),
                processes=self.settings.local_nproc_per_node,
            )
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
            cancelled = project_id in self._cancelled
        if cancelled:  # cancelled while its process was being started
            proc.send_signal(signal.SIGTERM)
        self._record_start(project_id, proc.pid, started)
        self._track(threading.Thread(target=self._watch, args=(project_id, proc), name=f"watch-{project_id}"))

    def _track(self, watcher: threading.Thread) -> None:
        watcher.daemon = True
        watcher.start()
        # Only the live watchers matter (shutdown joins them); a long-lived server must not keep them all.
        self._watchers = [w for w in self._watchers if w.is_alive()] + [watcher]

    def _record_start(self, project_id: UUID, pid: int, started: datetime) -> None:
        """Add the trainer's pid and host to the run record, keeping its identity (run id, acceptance time).
        A trainer (re)started just now has not beaten yet: its lease begins with its first heartbeat."""
        try:
            update_run(
                self.records,
                project_id,
                self._run_ids.get(project_id),
                host=self.host,
                pid=pid,
                started_at=started.isoformat(),
                heartbeat_at=None,
            )
        except Exception:
            logger.warning("Could not record pid %d for project %s", pid, project_id, exc_info=True)

    def _watch(self, project_id: UUID, proc: subprocess.Popen[bytes]) -> None:
        code = proc.wait()
        retry = code == EXIT_RETRY and self._may_retry(project_id)
        with self._lock:
            self._procs.pop(project_id, None)
            if retry:
                retry = self._requeue(project_id)
        if not retry:
            self._settle(project_id, code, None)
        self._dispatch()

    def _may_retry(self, project_id: UUID) -> bool:
        project = self.records.get_project(project_id)
        return (
            project is not None
            and project.status == ProjectStatus.TRAINING.value
            and run_id_of(project) == self._run_ids.get(project_id)
        )

    def _requeue(self, project_id: UUID) -> bool:
        """(Lock held.) A trainer stopped by a SIGTERM from outside saved a checkpoint: the same run goes back
        to the head of the queue (it resumes), unless the server is stopping, the run was cancelled or it has
        been retried enough."""
        attempt = self._retries.get(project_id, 0) + 1
        if self._closed or project_id in self._cancelled or attempt > MAX_RETRIES:
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
        """Record how a run ended (its process, if it had one, is gone). The trainer normally reports its own
        outcome; if the project is still `training`, it could not (killed, crashed, never started), so the
        reason is written here. Then the run's leftovers are removed."""
        phase = RunPhase.FAILED
        message = None
        try:
            project = self.records.get_project(project_id)
            status = project.status if project is not None else None
            if status == ProjectStatus.TRAINING.value:
                if exit_code == EXIT_RETRY and self._closed:
                    reason = reason or "The server stopped during the run; start the project again"
                message = (
                    reason or f"The trainer process exited with code {exit_code} without reporting a result"
                )
                self._fail(project_id, message, exit_code)
            elif status == ProjectStatus.PENDING_EVALUATION.value:
                phase = RunPhase.SUCCEEDED
            self._remove_leftovers(project_id)
        except Exception:
            logger.exception("Could not settle the run of project %s", project_id)
        with self._lock:
            if project_id in self._cancelled and phase != RunPhase.SUCCEEDED:
                phase, message = RunPhase.CANCELLED, CANCELLED_MESSAGE
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
        self.callbacks.run_ended(project_id, self._run_ids.get(project_id))

    def _fail(self, project_id: UUID, message: str, exit_code: int | None, **kwargs: Any) -> bool:
        return fail_run(
            self.records,
            project_id,
            message,
            agent_name=self.settings.agent_name,
            run_id=self._run_ids.get(project_id),
            exit_code=exit_code,
            **kwargs,
        )

    def _remove_leftovers(self, project_id: UUID) -> None:
        run_id = self._run_ids.get(project_id)
        if run_id:
            remove_run_leftovers(self.settings, self.storage, project_id, run_id)

    def cancel(self, project_id: UUID) -> bool:
        """Fail the project as cancelled first (so the trainer's own "interrupted" cannot win), then stop
        its process — a child of ours or an adopted trainer — or take it out of the queue. False when this
        executor has no such run, or it ended before it could be cancelled."""
        with self._lock:
            queued = project_id in self._queue
            if queued:
                self._queue.remove(project_id)
            held = queued or project_id in self._procs or project_id in self._adopted
            if held:
                self._cancelled.add(project_id)
        if not held:
            return False
        if not self._fail(
            project_id, CANCELLED_MESSAGE, None, error_type=CANCELLED_ERROR_TYPE, step="cancel"
        ):
            with self._lock:
                self._cancelled.discard(project_id)
            if queued:  # it is not `training` any more: there is nothing to start
                self._settle(project_id, None, None)
            return False
        with self._lock:
            proc = self._procs.get(project_id)
            adopted_pid = self._adopted.get(project_id)
        if queued:
            self._settle(project_id, None, CANCELLED_MESSAGE)
        elif proc is not None:
            proc.send_signal(signal.SIGTERM)
        elif adopted_pid is not None:
            signal_trainer(adopted_pid, project_id, signal.SIGTERM)
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

    def holds_queued(self, project_id: UUID) -> bool:
        with self._lock:
            return project_id in self._queue

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {
                "running": sum(1 for p in self._procs.values() if p is not None) + len(self._adopted),
                "queued": len(self._queue),
            }

    # -- restarts and shutdown --------------------------------------------------------------------------
    def recover(self) -> None:
        """Settle the local runs a previous server process left in `training` (adoption.py): adopt those
        whose trainer is alive — followed to its end, cancellable, holding a slot — and fail the others."""
        for trainer in left_behind(
            self.records,
            executor=self.name,
            host=self.host,
            agent_name=self.settings.agent_name,
            known=self._runs,
            on_failed=self.callbacks.run_ended,
        ):
            self._adopt(trainer)

    def _adopt(self, trainer: LiveTrainer) -> None:
        project_id, pid = trainer.project_id, trainer.pid
        logger.info("Adopting the running trainer of project %s (pid %d)", project_id, pid)
        with self._lock:
            self._adopted[project_id] = pid
            self._run_ids[project_id] = trainer.run_id
            self._runs[project_id] = RunInfo(
                name=run_name(project_id),
                executor=self.name,
                phase=RunPhase.RUNNING,
                pid=pid,
                started_at=trainer.started_at,
            )
        # Not joined at shutdown: it stops polling then, and the next server adopts the trainer again.
        threading.Thread(
            target=self._watch_adopted, args=(project_id, pid), daemon=True, name=f"adopted-{project_id}"
        ).start()

    def _watch_adopted(self, project_id: UUID, pid: int) -> None:
        while pid_runs_project(pid, project_id):
            if self._stopping.wait(_ADOPTED_POLL_S):
                return
        with self._lock:
            self._adopted.pop(project_id, None)
        # Its exit code is not ours to read: only a parent can wait for a process.
        self._settle(project_id, None, f"The trainer process (pid {pid}) ended without reporting a result")
        self._dispatch()

    def shutdown(self) -> None:
        """Stop taking runs; ask running trainers to stop (they mark their projects failed themselves) and
        fail the queued ones, so nothing is left `training` with nobody working on it. A trainer whose project
        has left `training` has recorded its result and is exiting: it is waited for, never interrupted.
        Adopted trainers (not our children) keep running; the next server adopts them."""
        with self._lock:
            self._closed = True
            queued = list(self._queue)
            self._queue.clear()
            procs = {project_id: p for project_id, p in self._procs.items() if p is not None}
        self._stopping.set()
        for project_id in queued:
            self._settle(
                project_id, None, "The server stopped before this run started; start the project again"
            )
        for project_id, proc in procs.items():
            if self._still_training(project_id):
                proc.send_signal(signal.SIGTERM)
            else:
                logger.info("The trainer of project %s has recorded its result; waiting for it", project_id)
        deadline = time.monotonic() + _STOP_GRACE_S
        for proc in procs.values():
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
        if not self.wait_settled(timeout_s=_SETTLE_WAIT_S):
            logger.warning("Some runs were still being settled at shutdown; their clean-up may be incomplete")
        self.callbacks.close()

    def wait_settled(self, timeout_s: float) -> bool:
        """Wait until every run of a trainer this server started has settled: its project written, its
        leftovers removed, its phase final (adopted trainers are not waited for). Those are the watcher
        thread's last acts, so its end is the only sure sign. False on timeout."""
        deadline = time.monotonic() + timeout_s
        while alive := [w for w in self._watchers if w.is_alive()]:  # a retry starts a new watcher
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            alive[0].join(timeout=min(left, 0.5))
        return True

    def _still_training(self, project_id: UUID) -> bool:
        """Whether the project is still this run's `training` (when the records cannot say: assume so)."""
        try:
            project = self.records.get_project(project_id)
        except Exception:
            logger.warning("Could not read project %s at shutdown", project_id, exc_info=True)
            return True
        return (
            project is not None
            and project.status == ProjectStatus.TRAINING.value
            and run_id_of(project) in (None, self._run_ids.get(project_id))
        )
