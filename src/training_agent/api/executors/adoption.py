"""At start-up: the local runs that a previous server process left in `training`.

A run whose trainer is still alive (same host, the pid still runs that project's command) is handed back for
adoption: the new server follows it to its end, can cancel it, and counts it against the concurrency limit. A
run whose trainer is gone, or that never started, is failed with the reason — nothing stays `training` with
nobody working on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from training_agent.core.lease import fail_run, run_of
from training_agent.core.processes import pid_runs_project
from training_agent.core.records import ProjectStatus, RecordsStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveTrainer:
    """A trainer of a previous server process that is still running."""

    project_id: UUID
    pid: int
    run_id: str | None
    started_at: datetime | None


def left_behind(
    records: RecordsStore,
    *,
    executor: str,
    host: str,
    agent_name: str,
    known: Container[UUID],
    on_failed: Callable[[UUID], None] | None = None,
) -> list[LiveTrainer]:
    """Fail the `executor` runs in `training` whose trainer is gone (and tell `on_failed`); return those
    whose trainer lives. Runs of other executors, and the `known` ones (this process holds them), are left
    alone."""
    alive = []
    for project in records.projects_in_status(ProjectStatus.TRAINING.value):
        run = run_of(project)
        if run.get("executor", executor) != executor or project.id in known:
            continue
        pid = run.get("pid")
        run_id = str(run["run_id"]) if run.get("run_id") else None
        if isinstance(pid, int) and run.get("host") == host and pid_runs_project(pid, project.id):
            alive.append(LiveTrainer(project.id, pid, run_id, _parse_time(run.get("started_at"))))
            continue
        where = f"pid {pid} on {run.get('host')}" if pid else "not started yet"
        failed = fail_run(
            records,
            project.id,
            f"The training process was lost when the server stopped ({where}); start the project again",
            agent_name=agent_name,
            run_id=run_id,
        )
        if failed and on_failed is not None:
            on_failed(project.id)
    return alive


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
