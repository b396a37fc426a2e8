"""A run's record in `projects.metadata.training_run`, its identity and its lease.

The run record is what every component knows about the one run a project may have:

    {"name": "tr-<project id>", "executor": "local" | "cli" | "kubernetes", "run_id": "<hex>",
     "attempt": 1, "accepted_at": ..., "host": ..., "pid": ..., "heartbeat_at": ...}

`run_id` is drawn when a start is accepted and never changes for that run, so a retry after preemption (the
same run) resumes its checkpoint while a new start of the project (a new run) never does. The trainer renews
its lease by writing `heartbeat_at` every few seconds; whichever long-lived component runs (the API server
for local and CLI runs, the controller for Kubernetes runs) fails a run whose lease has expired, so no project
stays `training` without somebody working on it.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from training_agent.core.completion import log_failed
from training_agent.core.logs import AgentLog
from training_agent.core.records import Project, ProjectStatus, RecordsStore
from training_agent.core.records.models import utcnow
from training_agent.core.runs import run_name

logger = logging.getLogger(__name__)

RUN_KEY = "training_run"


def new_run(project_id: UUID, executor: str, *, callback_url: str | None = None) -> dict[str, Any]:
    """The record of a run accepted just now (written by whoever claims the project). `callback_url`: where
    the run's end is reported (core/callbacks.py); kept in the record, which every later writer merges
    into, so the API after a restart and the controller both find it."""
    run: dict[str, Any] = {
        "name": run_name(project_id),
        "executor": executor,
        "run_id": uuid.uuid4().hex,
        "attempt": 0,
        "accepted_at": utcnow().isoformat(),
    }
    if callback_url:
        run["callback_url"] = callback_url
    return run


def claim_project(
    records: RecordsStore, project_id: UUID, executor: str, *, callback_url: str | None = None
) -> Project | None:
    """`pending_training` → `training` with a new run record, in one compare-and-set. Returns the claimed
    project, or None when it was not `pending_training` (another worker or request claimed it first)."""
    return records.transition_project(
        project_id,
        from_status=ProjectStatus.PENDING_TRAINING.value,
        to_status=ProjectStatus.TRAINING.value,
        metadata_patch={RUN_KEY: new_run(project_id, executor, callback_url=callback_url)},
    )


def run_of(project: Project) -> dict[str, Any]:
    """The project's run record ({} when it never had one)."""
    run = project.metadata.get(RUN_KEY)
    return dict(run) if isinstance(run, dict) else {}


def run_id_of(project: Project) -> str | None:
    value = run_of(project).get("run_id")
    return str(value) if value else None


def update_run(
    records: RecordsStore, project_id: UUID, run_id: str | None, /, **fields: Any
) -> Project | None:
    """Merge `fields` into the run record while the project is `training` and the record is still run
    `run_id` (None: whichever run it is). Returns the project, or None when the run is no longer this one.

    A read, a merge and a compare-and-set on the status: the only writers of a running record are its
    trainer (heartbeats) and its executor (the pid, once), and a heartbeat rewrites what it owns."""
    project = records.get_project(project_id)
    if project is None or project.status != ProjectStatus.TRAINING.value:
        return None
    run = run_of(project)
    if run_id is not None and run.get("run_id") not in (None, run_id):
        return None
    return records.transition_project(
        project_id,
        from_status=ProjectStatus.TRAINING.value,
        to_status=ProjectStatus.TRAINING.value,
        metadata_patch={RUN_KEY: {**run, **fields}},
    )


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=utcnow().tzinfo)


def heartbeat_at(run: dict[str, Any]) -> datetime | None:
    return _parse_time(run.get("heartbeat_at"))


def lease_expired(
    run: dict[str, Any], *, lease_s: float, now: datetime | None = None, from_accepted: bool = False
) -> bool:
    """Whether the run's trainer stopped renewing its lease. A run that never beat has no lease yet (it is
    queued, or its pod is starting) unless `from_accepted`: then its acceptance time counts as a beat
    (a CLI run claims and beats in one process)."""
    last = heartbeat_at(run)
    if last is None and from_accepted:
        last = _parse_time(run.get("accepted_at"))
    if last is None:
        return False
    return (now or utcnow()) - last > timedelta(seconds=lease_s)


def lease_message(run: dict[str, Any]) -> str:
    last = run.get("heartbeat_at") or run.get("accepted_at") or "never"
    return f"The trainer stopped responding (last heartbeat {last}); start the project again"


def fail_run(
    records: RecordsStore,
    project_id: UUID,
    message: str,
    *,
    agent_name: str,
    run_id: str | None = None,
    step: str = "worker",
    error_type: str = "WorkerError",
    exit_code: int | None = None,
) -> bool:
    """Fail the project's run from outside the trainer: `training` → `failed` with `message` as the error,
    and the run's closing `agent_logs` row (core/completion.py). With `run_id`, only while the record is
    still that run. Returns whether it moved the project (False: it had already ended, or it is another run
    now, and the row is not written: the run had its closing row already)."""
    project = records.get_project(project_id)
    if project is None or project.status != ProjectStatus.TRAINING.value:
        return False
    if run_id is not None and run_id_of(project) not in (None, run_id):
        return False
    error = {
        "message": message,
        "type": error_type,
        "step": step,
        "exit_code": exit_code,
        "traceback": None,
        "failed_at": utcnow().isoformat(),
    }
    moved = records.transition_project(
        project_id,
        from_status=ProjectStatus.TRAINING.value,
        to_status=ProjectStatus.FAILED.value,
        metadata_patch={"error": error},
    )
    if moved is not None:
        log_failed(AgentLog(records, project_id, agent_name), moved.name, error)
    return moved is not None
