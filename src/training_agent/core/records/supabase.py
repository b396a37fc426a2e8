"""Records in Supabase through supabase-py (PostgREST over HTTP).

Every call is retried on transient errors — the connection refused, reset or timed out, a gateway or
PostgREST answering 502/503/504 — a few times with exponential backoff and jitter (tenacity). Retrying is
safe because every request is idempotent: reads; status changes, which are compare-and-set on the status
(and tell a lost answer to their own write by the `updated_at` they wrote); and inserts, which carry an id
made here and ask PostgREST to ignore a duplicate of it (`Prefer: resolution=ignore-duplicates`), so a
retried insert whose first answer was lost stores one row, never two. Errors that are answers (400, 401,
409, ...) are never retried.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Collection
from typing import Any, TypeVar
from uuid import UUID

import httpx
from postgrest.exceptions import APIError
from supabase import Client, ClientOptions, create_client
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

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
logger = logging.getLogger(__name__)

_UNAVAILABLE_STATUSES = frozenset({502, 503, 504})


class Unavailable(Exception):
    """Supabase (its gateway, or PostgREST) answered 502, 503 or 504: worth another try."""

    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        super().__init__(f"HTTP {response.status_code} {response.reason_phrase}".strip())


def _raise_unavailable(response: httpx.Response) -> None:
    """httpx response hook: raise for the statuses worth retrying, whatever their body says (PostgREST's own
    503 carries a JSON error whose code is not the status; a proxy's is an HTML page)."""
    if response.status_code in _UNAVAILABLE_STATUSES:
        raise Unavailable(response)


def _transient(exc: BaseException) -> bool:
    return isinstance(
        exc, Unavailable | httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError
    )


def _rows(response: Any) -> list[dict[str, Any]]:
    data = response.data
    return list(data) if isinstance(data, list) else []


class SupabaseRecords(RecordsStore):
    """RecordsStore on a Supabase project's tables.

    `retry_attempts` tries per call at most (1: no retries), waiting `retry_initial_s`, then twice as long
    each time (up to `retry_max_s`, plus jitter), and starting no new try once `retry_budget_s` have passed
    since the first: with the defaults a call gives up after about 5 s of waiting."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        timeout_s: float = 30.0,
        retry_attempts: int = 4,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 4.0,
        retry_budget_s: float = 10.0,
    ) -> None:
        self.url = url
        self.retry_attempts = max(retry_attempts, 1)
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.retry_budget_s = retry_budget_s
        self._http = httpx.Client(
            timeout=timeout_s, follow_redirects=True, event_hooks={"response": [_raise_unavailable]}
        )
        options = ClientOptions(
            httpx_client=self._http,
            # One retry policy, ours: supabase-py's own retries only GETs, for up to 7 s.
            postgrest_client_retry=False,
            # A service never signs users in: no token refresh thread, no session storage.
            auto_refresh_token=False,
            persist_session=False,
        )
        self.client: Client = create_client(url, key, options=options)

    def _call(self, what: str, request: Callable[[], T]) -> T:
        """Run one request, retrying transient errors, and turn client and network errors into RecordsError
        with context."""
        retrying = Retrying(
            stop=stop_after_attempt(self.retry_attempts) | stop_after_delay(self.retry_budget_s),
            # Exponential backoff plus up to one first wait of jitter, so that callers spread out.
            wait=wait_exponential(multiplier=self.retry_initial_s, max=self.retry_max_s)
            + wait_random(0, self.retry_initial_s),
            retry=retry_if_exception(_transient),
            before_sleep=lambda state: self._log_retry(what, state),
            reraise=True,
        )
        try:
            return retrying(request)
        except APIError as exc:
            raise RecordsError(f"Supabase refused to {what}: {exc.message} (code {exc.code})") from exc
        except Unavailable as exc:
            raise RecordsError(f"Supabase at {self.url} is unavailable to {what}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise RecordsError(f"Cannot reach Supabase at {self.url} to {what}: {exc}") from exc

    def _log_retry(self, what: str, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        logger.warning(
            "Supabase call to %s failed (%s: %s); try %d of %d, next in %.1f s",
            what,
            type(error).__name__,
            error,
            state.attempt_number + 1,
            self.retry_attempts,
            delay,
        )

    def _insert(self, table: str, what: str, row: dict[str, Any]) -> dict[str, Any]:
        """Insert one row, idempotently: the row's id is made here and a second copy of it is ignored, so a
        retry after a lost answer cannot store the row twice. Returns the row as stored."""
        row = {"id": str(uuid.uuid4()), **row}
        response = self._call(
            what,
            lambda: self.client.table(table).upsert(row, ignore_duplicates=True, on_conflict="id").execute(),
        )
        rows = _rows(response)
        if rows:
            return rows[0]
        # Ignored as a duplicate: an earlier try stored it and only its answer was lost.
        again = _rows(
            self._call(what, lambda: self.client.table(table).select("*").eq("id", row["id"]).execute())
        )
        if not again:
            raise RecordsError(f"Supabase accepted the {table} row but returned nothing")
        return again[0]

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

    def list_projects(self, *, statuses: Collection[str] | None = None, limit: int = 50) -> list[Project]:
        if statuses is not None and not statuses:
            return []  # PostgREST reads `in.()` as a syntax error, not as "nothing"

        def request() -> Any:
            query = self.client.table("projects").select("*")
            if statuses is not None:
                query = query.in_("status", list(statuses))
            return query.order("updated_at", desc=True).limit(limit).execute()

        return [Project.model_validate(r) for r in _rows(self._call("list projects", request))]

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
        stamp = utcnow()
        update: dict[str, Any] = {"status": to_status, "updated_at": stamp.isoformat()}
        if metadata_patch:
            current = self.get_project(project_id)
            if current is None or current.status != from_status:
                return None
            update["metadata"] = {**current.metadata, **metadata_patch}
        tries = 0

        def patch() -> Any:
            nonlocal tries
            tries += 1
            return (
                self.client.table("projects")
                .update(update)
                .eq("id", str(project_id))
                .eq("status", from_status)
                .execute()
            )

        # The status filter makes this a compare-and-set: PostgREST updates no row (and returns none)
        # when another worker has moved the project on meanwhile.
        rows = _rows(self._call(f"move the project to {to_status}", patch))
        if rows:
            return Project.model_validate(rows[0])
        if tries > 1:
            # A retry finds the project moved on when an earlier try moved it and only the answer was lost:
            # the `updated_at` this call wrote tells its own write from another worker's.
            current = self.get_project(project_id)
            if current is not None and current.status == to_status and current.updated_at == stamp:
                return current
        return None

    def insert_model(self, model: NewModel) -> ModelRecord:
        return ModelRecord.model_validate(
            self._insert("models", "insert the model row", model.model_dump(mode="json"))
        )

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
        self._insert("agent_logs", "write to agent_logs", row)

    def recent_logs(
        self, project_id: UUID, *, limit: int = 50, levels: Collection[str] | None = None
    ) -> list[AgentLog]:
        if levels is not None and not levels:
            return []  # PostgREST reads `in.()` as a syntax error, not as "nothing"

        def request() -> Any:
            query = self.client.table("agent_logs").select("*").eq("project_id", str(project_id))
            if levels is not None:
                query = query.in_("log_level", list(levels))
            return query.order("created_at", desc=True).limit(limit).execute()

        return [AgentLog.model_validate(r) for r in _rows(self._call("read agent_logs", request))]

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
        return Project.model_validate(self._insert("projects", "create the project", row))

    def create_dataset(self, project_id: UUID, *, gcs_url: str, name: str | None = None) -> Dataset:
        row = {"project_id": str(project_id), "gcs_url": gcs_url, "name": name}
        return Dataset.model_validate(self._insert("datasets", "create the dataset", row))

    def delete_project(self, project_id: UUID) -> None:
        # Idempotent: a retry after a lost answer deletes nothing more.
        self._call(
            "delete the project",
            lambda: self.client.table("projects").delete().eq("id", str(project_id)).execute(),
        )

    def ping(self) -> None:
        self._call(
            "check the connection", lambda: self.client.table("projects").select("id").limit(1).execute()
        )

    def close(self) -> None:
        self._http.close()
