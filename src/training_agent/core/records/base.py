"""One interface over the shared tables, implemented by Supabase and by embedded SQLite."""

from __future__ import annotations

import abc
from collections.abc import Collection
from typing import Any
from uuid import UUID

from training_agent.core.records.models import (
    AgentLog,
    Dataset,
    ModelRecord,
    NewModel,
    Project,
)


class RecordsStore(abc.ABC):
    """The tables `projects`, `datasets`, `models` and `agent_logs`.

    Status changes are compare-and-set (`transition_project`): they only apply while the project is still
    in the status the caller saw, so two workers or a restarted one can never both act on a project.
    """

    @abc.abstractmethod
    def get_project(self, project_id: UUID) -> Project | None:
        """The project, or None when there is no such id."""

    @abc.abstractmethod
    def projects_in_status(self, status: str, *, limit: int = 1000) -> list[Project]:
        """Projects in `status`, oldest update first."""

    @abc.abstractmethod
    def list_projects(self, *, statuses: Collection[str] | None = None, limit: int = 50) -> list[Project]:
        """Projects in any of `statuses` (None: any status), most recently updated first."""

    @abc.abstractmethod
    def latest_dataset(self, project_id: UUID) -> Dataset | None:
        """The project's newest dataset row, or None."""

    @abc.abstractmethod
    def transition_project(
        self,
        project_id: UUID,
        *,
        from_status: str,
        to_status: str,
        metadata_patch: dict[str, Any] | None = None,
    ) -> Project | None:
        """Move the project to `to_status` if it is in `from_status`, merging `metadata_patch` into its
        metadata (top-level keys) and setting `updated_at`. Returns the new row, or None if the project
        was not in `from_status` (or does not exist)."""

    @abc.abstractmethod
    def insert_model(self, model: NewModel) -> ModelRecord:
        """Insert a `models` row and return it as stored."""

    @abc.abstractmethod
    def insert_log(
        self,
        project_id: UUID | None,
        agent_name: str,
        level: str,
        message: str,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Append one `agent_logs` row."""

    @abc.abstractmethod
    def recent_logs(
        self, project_id: UUID, *, limit: int = 50, levels: Collection[str] | None = None
    ) -> list[AgentLog]:
        """The project's newest `agent_logs` rows (only those whose `log_level` is in `levels`, when given),
        newest first."""

    @abc.abstractmethod
    def list_models(self, project_id: UUID) -> list[ModelRecord]:
        """The project's `models` rows, oldest first."""

    @abc.abstractmethod
    def create_project(self, name: str, *, status: str, metadata: dict[str, Any]) -> Project:
        """Insert a project (the demo and tests play the other agents with this)."""

    @abc.abstractmethod
    def create_dataset(self, project_id: UUID, *, gcs_url: str, name: str | None = None) -> Dataset:
        """Insert a dataset row for a project."""

    @abc.abstractmethod
    def delete_project(self, project_id: UUID) -> None:
        """Remove the project and, by the tables' cascade, its datasets, models and logs rows: only to undo
        a project this process was creating (`training-agent projects create`) and could not finish."""

    @abc.abstractmethod
    def ping(self) -> None:
        """Raise RecordsError when the store cannot be reached."""

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing to close
        """Release connections."""
