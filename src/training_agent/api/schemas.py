"""Request and response bodies; their docstrings and examples become the OpenAPI document."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from training_agent.core.runs import Progress, RunInfo

_PROJECT_ID = "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"


class StartRequest(BaseModel):
    """Start training a project that is in `pending_training`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"project_id": _PROJECT_ID},
                {
                    "project_id": _PROJECT_ID,
                    "callback_url": "https://orchestrator.example.com/hooks/training",
                },
            ]
        },
    )

    project_id: UUID
    callback_url: str | None = Field(
        default=None,
        description="Told how the run ended: a signed POST (see the README's Callbacks section). http or "
        "https, on a host in TRAINING_AGENT_CALLBACK_ALLOWED_HOSTS.",
    )


class StartResponse(BaseModel):
    """The run was accepted: the project is now `training`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "project_id": _PROJECT_ID,
                    "run_name": f"tr-{_PROJECT_ID}",
                    "status": "training",
                    "phase": "Running",
                    "queue_position": None,
                    "status_url": f"/agents/training/status/{_PROJECT_ID}",
                }
            ]
        }
    )

    project_id: UUID
    run_name: str
    status: Literal["training"] = "training"
    phase: str
    queue_position: int | None = None
    status_url: str


class CancelResponse(BaseModel):
    """The run is being stopped; the project ends `failed` with the reason "Cancelled"."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"project_id": _PROJECT_ID, "run_name": f"tr-{_PROJECT_ID}", "cancelled": True}]
        }
    )

    project_id: UUID
    run_name: str
    cancelled: Literal[True] = True


class LogEntry(BaseModel):
    created_at: datetime | None
    log_level: str
    agent_name: str
    message: str
    metadata: dict[str, Any]


class StatusResponse(BaseModel):
    """A project's training state: status, run phase, progress, result (the model and its pictures) or
    error, and recent logs."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "project_id": _PROJECT_ID,
                    "project_name": "flowers",
                    "status": "training",
                    "run": {
                        "name": f"tr-{_PROJECT_ID}",
                        "executor": "local",
                        "phase": "Running",
                        "pid": 4242,
                    },
                    "progress": {
                        "epoch": 3,
                        "total_epochs": 10,
                        "train_loss": 0.41,
                        "val_accuracy": 0.87,
                        "images_per_s": 812.5,
                        "eta_seconds": 96.0,
                        "live": {
                            "epoch": 4,
                            "epochs": 10,
                            "step": 45,
                            "steps": 100,
                            "images": 1440,
                            "images_per_second": 820.3,
                            "eta_seconds": 84.5,
                            "updated_at": "2026-01-05T10:31:12.403911+00:00",
                        },
                    },
                    "model_url": None,
                    "curves_url": None,
                    "confusion_url": None,
                    "error": None,
                    "logs": [],
                },
                {
                    "project_id": _PROJECT_ID,
                    "project_name": "flowers",
                    "status": "pending_evaluation",
                    "run": {
                        "name": f"tr-{_PROJECT_ID}",
                        "executor": "local",
                        "phase": "Succeeded",
                        "pid": 4242,
                        "exit_code": 0,
                    },
                    "progress": {
                        "epoch": 10,
                        "total_epochs": 10,
                        "train_loss": 0.12,
                        "val_loss": 0.21,
                        "val_accuracy": 0.94,
                        "images_per_s": 815.0,
                        "eta_seconds": 0.0,
                    },
                    "model_url": "gs://models-bucket/models/flowers_model.pth",
                    "curves_url": "gs://models-bucket/models/flowers_model_curves.png",
                    "confusion_url": "gs://models-bucket/models/flowers_model_confusion.png",
                    "error": None,
                    "logs": [],
                },
            ]
        }
    )

    project_id: UUID
    project_name: str
    status: str
    run: RunInfo | None
    progress: Progress
    model_url: str | None
    # Pictures beside the model (training curves; test confusion matrix), from the models row's metadata:
    # null until the model is recorded, and for models recorded before they existed.
    curves_url: str | None = None
    confusion_url: str | None = None
    error: dict[str, Any] | None
    logs: list[LogEntry]


class HealthResponse(BaseModel):
    """The process is up (liveness)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "ok", "version": "0.1.0", "executor": "local"}]}
    )

    status: Literal["ok"] = "ok"
    version: str
    executor: str


class ReadyResponse(BaseModel):
    """Whether the records store and storage can be reached; each check is `ok` or the error."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"status": "ready", "checks": {"records": "ok", "storage": "ok", "executor": "ok"}},
                {
                    "status": "unavailable",
                    "checks": {
                        "records": "RecordsError: Cannot reach Supabase at https://x.supabase.co",
                        "storage": "ok",
                        "executor": "ok",
                    },
                },
            ]
        }
    )

    status: Literal["ready", "unavailable"]
    checks: dict[str, str]


class ErrorResponse(BaseModel):
    """Every error has this shape (validation errors carry a list of problems instead of a string)."""

    detail: str | list[dict[str, Any]] = Field(examples=["Project 6f1c... not found"])


# The OpenAPI answer of every route behind `require_api_key` (api/deps.py).
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ErrorResponse,
        "description": "MCP_API_KEY is set and the bearer token is missing or wrong",
    }
}


class RunSummary(BaseModel):
    """One project the training agent knows, and its run as the records tell it (the status route also
    asks the executor)."""

    project_id: UUID
    project_name: str
    status: str
    run: RunInfo | None = Field(description="null for a project never started")
    error: str | None = Field(description="why it failed, for a `failed` project")
    created_at: datetime | None
    updated_at: datetime | None


class RunsResponse(BaseModel):
    """Projects in the training agent's statuses, most recently updated first."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "runs": [
                        {
                            "project_id": _PROJECT_ID,
                            "project_name": "flowers",
                            "status": "training",
                            "run": {"name": f"tr-{_PROJECT_ID}", "executor": "local", "phase": "Running"},
                            "error": None,
                            "created_at": "2026-01-05T10:20:00+00:00",
                            "updated_at": "2026-01-05T10:31:12+00:00",
                        }
                    ]
                }
            ]
        }
    )

    runs: list[RunSummary]


class LogsResponse(BaseModel):
    """A project's newest `agent_logs` rows at or above a level, oldest first (as `tail` shows a file)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "project_id": _PROJECT_ID,
                    "logs": [
                        {
                            "created_at": "2026-01-05T10:31:12+00:00",
                            "log_level": "info",
                            "agent_name": "training-agent",
                            "message": "Epoch 3/10: train loss 0.412, val accuracy 0.871",
                            "metadata": {"epoch": 3},
                        }
                    ],
                }
            ]
        }
    )

    project_id: UUID
    logs: list[LogEntry]


class DatasetCheck(BaseModel):
    """The layout pre-flight's verdict on a project's dataset, from the zip's listing alone: nothing is
    started and no record changes."""

    project_id: UUID
    dataset_url: str
    ok: bool
    reason: str | None = Field(description="why the layout rules refuse it, when `ok` is false")
    classes: list[str] = Field(default_factory=list)
    images: dict[str, int] = Field(default_factory=dict, description="images per split")
    images_per_class: dict[str, dict[str, int]] = Field(default_factory=dict)
    split_folders: dict[str, str] = Field(default_factory=dict, description="split → its folder in the zip")
    nested_zip: str | None = Field(
        default=None, description="the zip holds only this zip, whose layout the trainer checks"
    )


class WaitResult(BaseModel):
    """What `wait_for_training` returns: the status when the run ended or the wait's time ran out."""

    timed_out: bool
    waited_s: float
    status: StatusResponse
