"""What the API, the executors and (later) the controller say about a training run."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from training_agent.core.records.models import AgentLog

INITIATED = "Training initiated"  # the agent_logs row that opens a run (the API or the trainer writes it)
PROGRESS_WINDOW = 50  # newest agent_logs rows that progress is read from


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


class Progress(BaseModel):
    """Training progress, derived from the trainer's per-epoch `agent_logs` rows."""

    epoch: int = 0
    total_epochs: int | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    images_per_s: float | None = None
    eta_seconds: float | None = None


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
