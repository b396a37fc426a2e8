"""The API server's reaper: no local or CLI run stays `training` once its trainer stopped renewing its lease.

A trainer heart-beats `heartbeat_at` into its run record (core/lease.py). Once at start-up and then every
`min(TRAINING_AGENT_RUN_LEASE_SECONDS / 2, 30)` seconds, the reaper fails each `local` or `cli` run whose
lease expired with "the trainer stopped responding", kills its process if it is still alive on this host (a
hung trainer), and removes what the run left behind (work folder, checkpoint). At start-up it also sweeps
the leftovers of every run that ended while no server was watching.

Kubernetes runs are the controller's to reap once their TrainingRun exists; before that only the API can
see them, so an executor that finds such lost runs of its own (`reap_unsubmitted`: accepted, never handed to
the cluster) fails them on the same passes. A run queued in this server's executor is never reaped (it has no
trainer yet, or its retry is waiting for a slot); neither is a run whose trainer has not beaten yet — a local
trainer's lease begins with its first heartbeat, a CLI run's with its claim.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

from training_agent.api.executors import Executor
from training_agent.core.lease import fail_run, lease_expired, lease_message, run_of
from training_agent.core.processes import signal_trainer, wait_gone
from training_agent.core.records import ProjectStatus, RecordsStore
from training_agent.core.settings import Settings
from training_agent.core.storage import ObjectStorage
from training_agent.core.sweep import remove_run_leftovers, sweep_ended

logger = logging.getLogger(__name__)

REAPED_EXECUTORS = ("local", "cli")
_MAX_INTERVAL_S = 30.0
_KILL_WAIT_S = 5.0  # a SIGKILLed process is gone in moments; its folder is removed after it


@runtime_checkable
class FindsLostRuns(Protocol):
    """An executor whose runs can be lost where no lease shows it (the kubernetes executor's runs that never
    reached the cluster): it fails them itself, and returns their projects."""

    def reap_unsubmitted(self) -> list[UUID]: ...


class Reaper:
    def __init__(
        self,
        settings: Settings,
        records: RecordsStore,
        executor: Executor,
        storage: ObjectStorage | None = None,
    ) -> None:
        self.settings = settings
        self.records = records
        self.executor = executor
        self.storage = storage or ObjectStorage(settings)
        self.interval_s = min(settings.run_lease_seconds / 2, _MAX_INTERVAL_S)
        self.host = socket.gethostname()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """A pass and a sweep now (the server is starting), then a pass every interval on a thread."""
        self._guarded(self.reap)
        self._guarded(lambda: sweep_ended(self.settings, self.records, self.storage))
        self._thread = threading.Thread(target=self._loop, daemon=True, name="reaper")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=_KILL_WAIT_S + 5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._guarded(self.reap)

    def _guarded(self, action: Any) -> None:
        # A records or bucket hiccup costs one pass; the next one tries again.
        try:
            action()
        except Exception:
            logger.warning("The reaper's pass failed", exc_info=True)

    def reap(self) -> list[UUID]:
        """One pass: fail, stop and clean up every local or CLI run whose lease expired, and the executor's
        lost runs. Returns their projects."""
        reaped = []
        for project in self.records.projects_in_status(ProjectStatus.TRAINING.value):
            if self._expired(run_of(project), project.id) and self._reap(project.id):
                reaped.append(project.id)
        if isinstance(self.executor, FindsLostRuns):
            reaped += self.executor.reap_unsubmitted()
        return reaped

    def _expired(self, run: dict[str, Any], project_id: UUID) -> bool:
        executor = run.get("executor", "local")
        if executor not in REAPED_EXECUTORS or self.executor.holds_queued(project_id):
            return False
        return lease_expired(run, lease_s=self.settings.run_lease_seconds, from_accepted=executor == "cli")

    def _reap(self, project_id: UUID) -> bool:
        # Read afresh: the trainer may have beaten since the listing.
        project = self.records.get_project(project_id)
        if project is None or project.status != ProjectStatus.TRAINING.value:
            return False
        run = run_of(project)
        if not self._expired(run, project_id):
            return False
        run_id = str(run["run_id"]) if run.get("run_id") else None
        message = lease_message(run)
        if not fail_run(
            self.records,
            project_id,
            message,
            agent_name=self.settings.agent_name,
            run_id=run_id,
            step="lease",
            error_type="LeaseExpired",
        ):
            return False
        logger.warning("Reaped the run of project %s: %s", project_id, message)
        pid = run.get("pid")
        # Alive without beating: hung. Its run is failed already; it must not go on holding the GPU.
        local_pid = pid if isinstance(pid, int) and run.get("host") == self.host else None
        if local_pid is not None and signal_trainer(local_pid, project_id, signal.SIGKILL):
            logger.warning("Killed the hung trainer of project %s (pid %d)", project_id, local_pid)
            wait_gone(local_pid, project_id, _KILL_WAIT_S)
        if run_id is not None:
            remove_run_leftovers(self.settings, self.storage, project_id, run_id)
        return True
