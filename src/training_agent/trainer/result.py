"""What a run did, as `train --json` prints it and the demo reads it."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from training_agent.core.errors import TrainingAgentError
from training_agent.core.records.models import utcnow


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


def error_details(exc: BaseException, step: str) -> dict[str, Any]:
    """The `error` of a run that ended on `exc` during `step`, as the project metadata and the log keep it."""
    message = str(exc) if isinstance(exc, TrainingAgentError) else f"{type(exc).__name__}: {exc}"
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        message = f"Interrupted ({type(exc).__name__}) during step {step}"
    return {
        "message": message,
        "type": type(exc).__name__,
        "step": step,
        "traceback": "".join(traceback.format_exception(exc)),
        "failed_at": utcnow().isoformat(),
    }
