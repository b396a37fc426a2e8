"""What a run did, as `train --json` prints it and the demo reads it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID


@dataclass
class RunResult:
    """`status` is the project's status afterwards (None if there is no such project)."""

    project_id: UUID
    succeeded: bool
    status: str | None
    exit_code: int
    model_url: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "project_id": str(self.project_id),
            "succeeded": self.succeeded,
            "status": self.status,
            "exit_code": self.exit_code,
            "model_url": self.model_url,
            "metrics": self.metrics,
            "error": self.error,
        }
