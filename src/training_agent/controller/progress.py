"""A TrainingRun's `status.progress`, in one pure function: the per-epoch record (agent_logs) and the
trainer's in-epoch report (its heartbeat in the run record), with the short texts that
`kubectl get trainingruns` prints in its Progress ("e3/10 45%") and ETA ("4m05s") columns."""

from __future__ import annotations

from typing import Any

from training_agent.core.runs import Progress, StepProgress, duration_text


def progress_text(epoch: int, epochs: int, step: int, steps: int) -> str:
    """The epoch in progress and how far into it, e.g. "e3/10 45%"."""
    percent = min(100 * step // steps, 100) if steps > 0 else 0
    return f"e{epoch}/{epochs} {percent}%"


def run_progress(epochs: Progress, live: StepProgress | None, *, finished: bool) -> dict[str, Any]:
    """`status.progress` (camelCase, as Kubernetes resources are). `finished`: the run succeeded, so the
    progress is whole and nothing is left, whatever the last in-epoch report said."""
    out: dict[str, Any] = {"epoch": epochs.epoch}
    if epochs.total_epochs:
        out["totalEpochs"] = epochs.total_epochs
        out["epochText"] = f"{epochs.epoch}/{epochs.total_epochs}"
    for key, value in (
        ("trainLoss", epochs.train_loss),
        ("valAccuracy", epochs.val_accuracy),
        ("imagesPerSecond", epochs.images_per_s),
    ):
        if value is not None:
            out[key] = value
    if finished:
        last = epochs.epoch or (live.epoch if live else 0)
        total = epochs.total_epochs or (live.epochs if live else last)
        if last:
            out["text"] = progress_text(last, total, 1, 1)
        out["etaSeconds"], out["eta"] = 0.0, duration_text(0)
        return out
    if live is None:
        return out
    out.update(
        step=live.step,
        steps=live.steps,
        text=progress_text(live.epoch, live.epochs, live.step, live.steps),
        updatedAt=live.updated_at.isoformat(),
    )
    if live.images_per_second is not None:
        out["imagesPerSecond"] = live.images_per_second  # fresher than the last epoch's
    if live.eta_seconds is not None:
        out["etaSeconds"], out["eta"] = live.eta_seconds, duration_text(live.eta_seconds)
    return out
