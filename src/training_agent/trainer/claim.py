"""The `claim` stage: the project must be ours to train, and its run record says which run this is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from training_agent.core.errors import InvalidInputError, TrainingAgentError
from training_agent.core.lease import claim_project, new_run, run_of, update_run
from training_agent.core.logs import AgentLog
from training_agent.core.records import Project, ProjectStatus, RecordsStore
from training_agent.trainer.result import RunResult, error_details

CLAIM_STEP = "load_project"  # the step a run is in until its claim is made (and a refusal names)


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
    project = claimable(records.get_project(project_id), project_id, claimed=claimed)
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


def claimable(project: Project | None, project_id: UUID, *, claimed: bool) -> Project:
    """The project, if a trainer may take it: it exists and is in the status its caller says."""
    if project is None:
        raise InvalidInputError(f"No project with id {project_id}")
    expected = ProjectStatus.TRAINING if claimed else ProjectStatus.PENDING_TRAINING
    if project.status != expected.value:
        raise InvalidInputError(
            f"Project {project_id} is in status {project.status!r}, not {expected.value!r}; "
            "it was left unchanged"
        )
    return project


def refused_early(
    records: RecordsStore, project_id: UUID, *, claimed: bool, agent_name: str
) -> RunResult | None:
    """`claim`'s refusal, read only and reported as the run would report it, for a lone trainer that has not
    imported torch yet: a project that is not there or not its to train is refused in a second, not ten.
    None: the run may go ahead (and `claim` checks again, under its compare-and-set)."""
    project = records.get_project(project_id)
    try:
        claimable(project, project_id, claimed=claimed)
    except TrainingAgentError as exc:
        return refuse(records, project_id, project, exc, agent_name)
    return None


def refuse(
    records: RecordsStore,
    project_id: UUID,
    current: Project | None,
    exc: TrainingAgentError,
    agent_name: str,
) -> RunResult:
    """Refused before claiming the project (`current`: as it stands now): report it, but change nothing."""
    # agent_logs.project_id references projects(id): an unknown id can only be logged without it.
    log = AgentLog(records, project_id if current is not None else None, agent_name)
    error = {**error_details(exc, CLAIM_STEP), "exit_code": exc.exit_code}
    log.error(f"Training not started: {error['message']}", **error)
    return RunResult(project_id, False, current.status if current else None, exc.exit_code, error=error)
