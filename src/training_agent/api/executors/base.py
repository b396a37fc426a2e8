"""Executors run accepted training runs. `local` runs child processes; `kubernetes` will create
TrainingRun resources. Both receive a project already moved to `training` by the API."""

from __future__ import annotations

import abc
from collections.abc import Callable
from uuid import UUID

from training_agent.core.runs import RunInfo, RunPhase

# Called once per run that ends (phase Succeeded, Failed or Cancelled), e.g. to count it in /metrics.
OnFinish = Callable[[UUID, RunPhase], None]

# `metadata.error.type` of a project whose run was cancelled (the controller writes the same), so the records
# alone tell a cancelled run from a failed one.
CANCELLED_ERROR_TYPE = "Cancelled"


class Executor(abc.ABC):
    name: str

    @abc.abstractmethod
    def submit(self, project_id: UUID) -> RunInfo:
        """Queue or start the run for a project that is now `training`."""

    @abc.abstractmethod
    def describe(self, project_id: UUID) -> RunInfo | None:
        """The run as this executor knows it, or None if it knows nothing of it."""

    @abc.abstractmethod
    def cancel(self, project_id: UUID) -> bool:
        """Stop the project's run; False if this executor has no such run."""

    @abc.abstractmethod
    def recover(self) -> None:
        """At start-up: settle runs left behind by a previous server process."""

    @abc.abstractmethod
    def shutdown(self) -> None:
        """At shutdown: stop what runs, so that no project stays `training` with nobody working on it."""

    def holds_queued(self, project_id: UUID) -> bool:
        """Whether the project's run waits in this process's queue (it has no trainer to heart-beat yet, so
        the reaper must leave it alone)."""
        return False

    def counts(self) -> dict[str, int]:
        """Runs by state that this process holds (for /metrics); executors that hold none report none."""
        return {}

    def ping(self) -> None:  # noqa: B027 - optional: most executors have nothing to check
        """Raise if the executor cannot take runs (a cluster unreachable, ...)."""
