"""What the API, the executors and (later) the controller say about a training run."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field, ValidationError

from training_agent.core.records.models import AgentLog

INITIATED = "Training initiated"  # the agent_logs row that opens a run (the API or the trainer writes it)
PROGRESS_WINDOW = 50  # newest agent_logs rows that progress is read from
STEP_PROGRESS_KEY = "progress"  # the run record's key for the trainer's in-epoch progress


class RunPhase(str, Enum):
    PENDING = "Pending"
    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


def run_name(project_id: UUID) -> str:
    """Deterministic per project, so a second start can only ever find the first run, never make another.
    Short enough for a Kubernetes object name and label value."""
    return f"tr-{project_id}"


def duration_text(seconds: float) -> str:
    """A short duration for a kubectl column or a terminal: 45s, 4m05s, 2h07m."""
    total = max(round(seconds), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class RunInfo(BaseModel):
    """A run as its executor sees it."""

    name: str
    executor: str
    phase: RunPhase
    queue_position: int | None = None
    pid: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    message: str | None = None


class StepProgress(BaseModel):
    """The trainer's latest report from inside an epoch: written into the run record by its heartbeat
    (`trainer/progress.py`, `trainer/heartbeat.py`) every few seconds, so it moves without waiting for an
    epoch to end."""

    epoch: int = Field(ge=1, description="the epoch in progress, 1-based")
    epochs: int = Field(ge=1, description="epochs the run trains at most (early stopping may end it sooner)")
    step: int = Field(ge=0, description="batches done in this epoch")
    steps: int = Field(ge=0, description="batches in an epoch")
    images: int = Field(ge=0, description="training images seen in this epoch")
    images_per_second: float | None = None
    eta_seconds: float | None = Field(
        default=None,
        description="the rest of the run as of `updated_at`: this epoch's steps and the epochs after",
    )
    updated_at: datetime


def step_progress(run: dict[str, Any]) -> StepProgress | None:
    """The in-epoch progress in a run record (core/lease.py), or None when it has none (or an unreadable one:
    progress is a view, never a reason to fail a status request)."""
    value = run.get(STEP_PROGRESS_KEY)
    if not isinstance(value, dict):
        return None
    try:
        return StepProgress.model_validate(value)
    except ValidationError:
        return None


class Progress(BaseModel):
    """Training progress, derived from the trainer's per-epoch `agent_logs` rows; `live` is the trainer's
    in-epoch report (null when there is none, and once the run has ended)."""

    epoch: int = 0
    total_epochs: int | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    images_per_s: float | None = None
    eta_seconds: float | None = None
    live: StepProgress | None = None


def progress_from_epochs(epoch_rows: list[dict[str, Any]], total_epochs: int | None) -> Progress:
    """Progress from the per-epoch records (oldest first): the last one, and an ETA from the mean
    epoch time."""
    if not epoch_rows:
        return Progress(total_epochs=total_epochs)
    last = epoch_rows[-1]
    epoch = int(last.get("epoch", len(epoch_rows)))
    eta = None
    seconds = [float(r["seconds"]) for r in epoch_rows if isinstance(r.get("seconds"), int | float)]
    if total_epochs and seconds:
        eta = round(max(total_epochs - epoch, 0) * sum(seconds) / len(seconds), 1)
    return Progress(
        epoch=epoch,
        total_epochs=total_epochs,
        train_loss=last.get("train_loss"),
        val_loss=last.get("val_loss"),
        val_accuracy=last.get("val_accuracy"),
        images_per_s=last.get("images_per_s"),
        eta_seconds=eta,
    )


def epoch_rows(logs: list[AgentLog]) -> list[dict[str, Any]]:
    """The current run's per-epoch records, oldest first, from agent_logs rows given newest first.

    Rows are taken back to the latest "Training initiated"; a window that does not reach it holds only the
    current run's rows, and an ETA from the recent epochs follows the current speed anyway."""
    current = []
    for row in logs:
        if "epoch" in row.metadata and "train_loss" in row.metadata:
            current.append(row.metadata)
        if row.message == INITIATED:
            break
    return list(reversed(current))


def progress_from_logs(logs: list[AgentLog], default_total: int | None) -> Progress:
    epochs = epoch_rows(logs)
    total = default_total
    if epochs and isinstance(epochs[-1].get("total_epochs"), int):
        total = epochs[-1]["total_epochs"]
    return progress_from_epochs(epochs, total)
