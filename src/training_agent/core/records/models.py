"""The rows of the shared tables, as the other agents see them (see supabase/migrations/)."""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


class ProjectStatus(str, Enum):
    """The statuses this agent reads or writes; other agents use more, which pass through untouched."""

    PENDING_TRAINING = "pending_training"
    TRAINING = "training"
    PENDING_EVALUATION = "pending_evaluation"
    FAILED = "failed"


class LogLevel(str, Enum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    def and_above(self) -> list[str]:
        """This level's value and every more severe one's: the filter "this level or above"."""
        levels = list(LogLevel)
        return [level.value for level in levels[levels.index(self) :]]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class _Row(BaseModel):
    # Other agents may add columns; keep them rather than fail.
    model_config = ConfigDict(extra="allow")


class Project(_Row):
    id: UUID
    name: str
    status: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Dataset(_Row):
    id: UUID
    project_id: UUID
    gcs_url: str | None = None
    name: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None


class ModelRecord(_Row):
    id: UUID
    project_id: UUID
    name: str
    framework: str
    gcs_url: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None


class AgentLog(_Row):
    id: UUID
    project_id: UUID | None
    agent_name: str
    log_level: str
    message: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None


class NewModel(BaseModel):
    """What the trainer inserts into `models` (Requirement 7.2)."""

    project_id: UUID
    name: str
    framework: str = "pytorch"
    gcs_url: str
    metadata: dict[str, Any] = Field(default_factory=dict)
