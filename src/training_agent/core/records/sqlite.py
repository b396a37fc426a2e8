"""Embedded records: the four shared tables in one SQLite file, for running without Supabase.

The API, the controller and trainer child processes share the file; WAL mode and a busy timeout let them
write without tripping over each other. Each thread keeps one connection (sqlite3 connections may not
cross threads), reused across calls: opening one per call cost a third of the status route's throughput.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

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

# Same tables and columns as supabase/migrations/; uuid and jsonb are stored as text.
SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS datasets (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name TEXT,
    gcs_url TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS datasets_project_id_idx ON datasets(project_id, created_at);
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    framework TEXT NOT NULL,
    gcs_url TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS models_project_id_idx ON models(project_id, created_at);
CREATE TABLE IF NOT EXISTS agent_logs (
    id TEXT PRIMARY KEY,
    project_id TEXT REFERENCES projects(id) ON DELETE CASCADE,
    agent_name TEXT NOT NULL,
    log_level TEXT NOT NULL,
    message TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS agent_logs_project_id_idx ON agent_logs(project_id, created_at);
"""

_JSON_COLUMNS = ("metadata",)


def _row_dict(row: sqlite3.Row) -> dict[str, Any]:
    data = dict(row)
    for column in _JSON_COLUMNS:
        if column in data and isinstance(data[column], str):
            data[column] = json.loads(data[column])
    return data


def _one_of(column: str, values: Collection[str] | None) -> tuple[str, list[str]]:
    """The condition `column IN (?, ...)` and its parameters; always true for None (any value). The column
    name is always one of ours, never the caller's."""
    if values is None:
        return "1", []
    marks = ", ".join("?" for _ in values)
    # An empty collection matches nothing, as `IN ()` would if SQL allowed it.
    return (f"{column} IN ({marks})" if values else "0"), list(values)


class SQLiteRecords(RecordsStore):
    """RecordsStore on a local SQLite file (created with its tables on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise RecordsError(f"Cannot open the SQLite records file {path}: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA foreign_keys=ON")
            # WAL with synchronous=NORMAL: a commit survives the process being killed (the faults that
            # matter here); only an OS crash may lose the last commits. FULL fsyncs every log row, and an
            # fsync right after a checkpoint's hundreds of MB were written waits for them to reach the disk.
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = self._connection()
        try:
            yield db
        except sqlite3.Error as exc:
            raise RecordsError(f"SQLite records error in {self.path}: {exc}") from exc
        finally:
            if db.in_transaction:  # an error inside BEGIN ... COMMIT: never leave the lock held
                db.rollback()

    def _insert(self, table: str, row: dict[str, Any]) -> dict[str, Any]:
        stored = {k: json.dumps(v) if k in _JSON_COLUMNS else v for k, v in row.items()}
        columns = ", ".join(stored)
        marks = ", ".join("?" for _ in stored)
        with self._connect() as db:
            db.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", list(stored.values()))  # noqa: S608
        return row

    def get_project(self, project_id: UUID) -> Project | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM projects WHERE id = ?", (str(project_id),)).fetchone()
        return Project.model_validate(_row_dict(row)) if row else None

    def projects_in_status(self, status: str, *, limit: int = 1000) -> list[Project]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM projects WHERE status = ? ORDER BY updated_at, rowid LIMIT ?", (status, limit)
            ).fetchall()
        return [Project.model_validate(_row_dict(r)) for r in rows]

    def list_projects(self, *, statuses: Collection[str] | None = None, limit: int = 50) -> list[Project]:
        condition, params = _one_of("status", statuses)
        with self._connect() as db:
            rows = db.execute(
                f"SELECT * FROM projects WHERE {condition} ORDER BY updated_at DESC, rowid DESC LIMIT ?",  # noqa: S608
                [*params, limit],
            ).fetchall()
        return [Project.model_validate(_row_dict(r)) for r in rows]

    def latest_dataset(self, project_id: UUID) -> Dataset | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT * FROM datasets WHERE project_id = ? ORDER BY created_at DESC, rowid DESC LIMIT 1",
                (str(project_id),),
            ).fetchone()
        return Dataset.model_validate(_row_dict(row)) if row else None

    def transition_project(
        self,
        project_id: UUID,
        *,
        from_status: str,
        to_status: str,
        metadata_patch: dict[str, Any] | None = None,
    ) -> Project | None:
        with self._connect() as db:
            # BEGIN IMMEDIATE takes the write lock before reading, so the read-merge-write of metadata
            # cannot interleave with another process's transition.
            db.execute("BEGIN IMMEDIATE")
            row = db.execute(
                "SELECT metadata FROM projects WHERE id = ? AND status = ?", (str(project_id), from_status)
            ).fetchone()
            if row is None:
                db.execute("ROLLBACK")
                return None
            metadata = {**json.loads(row["metadata"]), **(metadata_patch or {})}
            db.execute(
                "UPDATE projects SET status = ?, metadata = ?, updated_at = ? WHERE id = ?",
                (to_status, json.dumps(metadata), utcnow().isoformat(), str(project_id)),
            )
            db.execute("COMMIT")
        return self.get_project(project_id)

    def insert_model(self, model: NewModel) -> ModelRecord:
        row = {
            "id": str(uuid4()),
            **model.model_dump(mode="json"),
            "created_at": utcnow().isoformat(),
        }
        return ModelRecord.model_validate(self._insert("models", row))

    def insert_log(
        self,
        project_id: UUID | None,
        agent_name: str,
        level: str,
        message: str,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._insert(
            "agent_logs",
            {
                "id": str(uuid4()),
                "project_id": str(project_id) if project_id else None,
                "agent_name": agent_name,
                "log_level": level,
                "message": message,
                "metadata": metadata or {},
                "created_at": utcnow().isoformat(),
            },
        )

    def recent_logs(
        self, project_id: UUID, *, limit: int = 50, levels: Collection[str] | None = None
    ) -> list[AgentLog]:
        condition, params = _one_of("log_level", levels)
        with self._connect() as db:
            rows = db.execute(
                f"SELECT * FROM agent_logs WHERE project_id = ? AND {condition} "  # noqa: S608
                "ORDER BY created_at DESC, rowid DESC LIMIT ?",
                [str(project_id), *params, limit],
            ).fetchall()
        return [AgentLog.model_validate(_row_dict(r)) for r in rows]

    def list_models(self, project_id: UUID) -> list[ModelRecord]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM models WHERE project_id = ? ORDER BY created_at, rowid", (str(project_id),)
            ).fetchall()
        return [ModelRecord.model_validate(_row_dict(r)) for r in rows]

    def create_project(self, name: str, *, status: str, metadata: dict[str, Any]) -> Project:
        now = utcnow().isoformat()
        row = {
            "id": str(uuid4()),
            "name": name,
            "status": status,
            "metadata": metadata,
            "created_at": now,
            "updated_at": now,
        }
        return Project.model_validate(self._insert("projects", row))

    def create_dataset(self, project_id: UUID, *, gcs_url: str, name: str | None = None) -> Dataset:
        row: dict[str, Any] = {
            "id": str(uuid4()),
            "project_id": str(project_id),
            "name": name,
            "gcs_url": gcs_url,
            "metadata": {},
            "created_at": utcnow().isoformat(),
        }
        return Dataset.model_validate(self._insert("datasets", row))

    def delete_project(self, project_id: UUID) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM projects WHERE id = ?", (str(project_id),))

    def ping(self) -> None:
        with self._connect() as db:
            db.execute("SELECT 1 FROM projects LIMIT 1")
