"""Records in Supabase through supabase-py (PostgREST over HTTP)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from uuid import UUID

import httpx
from postgrest.exceptions import APIError
from supabase import Client, ClientOptions, create_client

from training_agent.core.errors import RecordsError
from training_agent.core.records.base import RecordsStore
from training_agent.core.records.models import (
    AgentLog,
    Dataset,
    ModelRecord,
    NewModel,
    Project,
    utcnow,
)

T = TypeVar("T")


def _rows(response: Any) -> list[dict[str, Any]]:
    data = response.data
    return list(data) if isinstance(data, list) else []


class SupabaseRecords(RecordsStore):
    """RecordsStore on a Supabase project's tables."""

    def __init__(self, url: str, key: str, *, timeout_s: float = 30.0) -> None:
        self.url = url
        options = ClientOptions(
            postgrest_client_timeout=timeout_s,
            # A service never signs users in: no token refresh thread, no session storage.
            auto_refresh_token=False,
            persist_session=False,
        )
        self.client: Client = create_client(url, key, options=options)

    def _call(self, what: str, request: Callable[[], T]) -> T:
        """Run one request, turning client and network errors into RecordsError with context."""
        try:
            return request()
        except APIError as exc:
            raise RecordsError(f"Supabase refused to {what}: {exc.message} (code {exc.code})") from exc
        except httpx.HTTPError as exc:
            raise RecordsError(f"Cannot reach Supabase at {self.url} to {what}: {exc}") from exc

    def get_project(self, project_id: UUID) -> Project | None:
        response = self._call(
            "read the project",
            lambda: self.client.table("projects").select("*").eq("id", str(project_id)).execute(),
        )
        rows = _rows(response)
        return Project.model_validate(rows[0]) if rows else None

    def projects_in_status(self, status: str, *, limit: int = 1000) -> list[Project]:
        response = self._call(
            "list projects",
            lambda: (
                self.client.table("projects")
                .select("*")
                .eq("status", status)
                .order("updated_at")
                .limit(limit)
                .execute()
            ),
        )
        return [Project.model_validate(r) for r in _rows(response)]

    def latest_dataset(self, project_id: UUID) -> Dataset | None:
        response = self._call(
            "read the dataset",
            lambda: (
                self.client.table("datasets")
                .select("*")
                .eq("project_id", str(project_id))
                .order("created_at", desc=True)
                .limit(1)
                .execute()
            ),
        )
        rows = _rows(response)
        return Dataset.model_validate(rows[0]) if rows else None

    def transition_project(
        self,
        project_id: UUID,
        *,
        from_status: str,
        to_status: str,
        metadata_patch: dict[str, Any] | None = None,
    ) -> Project | None:
        update: dict[str, Any] = {"status": to_status, "updated_at": utcnow().isoformat()}
        if metadata_patch:
            current = self.get_project(project_id)
            if current is None or current.status != from_status:
                return None
            update["metadata"] = {**current.metadata, **metadata_patch}
        # The status filter makes this a compare-and-set: PostgREST updates no row (and returns none)
        # when another worker has moved the project on meanwhile.
        response = self._call(
            f"move the project to {to_status}",
            lambda: (
                self.client.table("projects")
                .update(update)
                .eq("id", str(project_id))
                .eq("status", from_status)
                .execute()
            ),
        )
        rows = _rows(response)
        return Project.model_validate(rows[0]) if rows else None

    def insert_model(self, model: NewModel) -> ModelRecord:
        response = self._call(
            "insert the model row",
            lambda: self.client.table("models").insert(model.model_dump(mode="json")).execute(),
        )
        rows = _rows(response)
        if not rows:
            raise RecordsError("Supabase accepted the model row but returned nothing")
        return ModelRecord.model_validate(rows[0])

    def insert_log(
        self,
        project_id: UUID | None,
        agent_name: str,
        level: str,
        message: str,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        row = {
            "project_id": str(project_id) if project_id else None,
            "agent_name": agent_name,
            "log_level": level,
            "message": message,
            "metadata": metadata or {},
        }
        self._call("write to agent_logs", lambda: self.client.table("agent_logs").insert(row).execute())

    def recent_logs(self, project_id: UUID, *, limit: int = 50) -> list[AgentLog]:
        response = self._call(
            "read agent_logs",
            lambda: (
                self.client.table("agent_logs")
                .select("*")
                .eq("project_id", str(project_id))
                .order("created_at", desc=True)
                .limit(limit)
                .execute()
            ),
        )
        return [AgentLog.model_validate(r) for r in _rows(response)]

    def list_models(self, project_id: UUID) -> list[ModelRecord]:
        response = self._call(
            "read models",
            lambda: (
                self.client.table("models")
                .select("*")
                .eq("project_id", str(project_id))
                .order("created_at")
                .execute()
            ),
        )
        return [ModelRecord.model_validate(r) for r in _rows(response)]

    def create_project(self, name: str, *, status: str, metadata: dict[str, Any]) -> Project:
        row = {"name": name, "status": status, "metadata": metadata}
        response = self._call(
            "create the project", lambda: self.client.table("projects").insert(row).execute()
        )
        return Project.model_validate(_rows(response)[0])

    def create_dataset(self, project_id: UUID, *, gcs_url: str, name: str | None = None) -> Dataset:
        row = {"project_id": str(project_id), "gcs_url": gcs_url, "name": name}
        response = self._call(
            "create the dataset", lambda: self.client.table("datasets").insert(row).execute()
        )
        return Dataset.model_validate(_rows(response)[0])

    def ping(self) -> None:
        self._call(
            "check the connection", lambda: self.client.table("projects").select("id").limit(1).execute()
        )
