"""The `claim` stage: the project must be ours to train, and its run record says which run this is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from training_agent.core.errors import InvalidInputError
from training_agent.core.lease import claim_project, new_run, run_of, update_run
from training_agent.core.records import Project, ProjectStatus, RecordsStore


@dataclass(frozen=True)
class Claim:
    project: Project
    run: dict[str, Any]  # the run record (core/lease.py)

    @property
    def run_id(self) -> str:
        return str(self.run["run_id"])

    @property
    def attempt(self) -> int:
        """1 for the run's first trainer, 2 for its first retry (after preemption), ..."""
        return int(self.run.get("attempt") or 0) + 1


def claim(records: RecordsStore, project_id: UUID, *, claimed: bool) -> Claim:
    """`claimed`: the API (or a Job's TrainingRun) already moved the project to `training` and wrote the
    run record; otherwise this trainer claims a `pending_training` project itself, as a `cli` run."""
    project = records.get_project(project_id)
    if project is None:
        raise InvalidInputError(f"No project with id {project_id}")
    expected = ProjectStatus.TRAINING if claimed else ProjectStatus.PENDING_TRAINING
    if project.status != expected.value:
        raise InvalidInputError(
            f"Project {project_id} is in status {project.status!r}, not {expected.value!r}; "
            "it was left unchanged"
        )
    if claimed:
        run = run_of(project)
        if not run.get("run_id"):
            # Claimed by an older API that wrote no run id: this trainer gives the run its identity.
            run = {**new_run(project_id, "unknown"), **run}
            project = update_run(records, project_id, None, **run) or project
        return Claim(project, run)
    moved = claim_project(records, project_id, "cli")
    if moved is None:
        raise InvalidInputError(f"Project {project_id} was claimed by another worker meanwhile")
    return Claim(moved, run_of(moved))
