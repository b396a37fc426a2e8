"""In-epoch progress: the training loop reports every step here (cheaply, in memory); the heartbeat carries
the latest snapshot into the run record at most every TRAINING_AGENT_PROGRESS_EVERY_SECONDS, and
`training-agent train` draws it in a terminal.

The snapshot is the run record's `progress` (core/runs.py `StepProgress`):
{epoch, epochs, step, steps, images, images_per_second, eta_seconds, updated_at}.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from training_agent.core.records.models import utcnow

# A log record attribute marking the training loop's per-step line, which a terminal's progress bar
# (progress_bar.py) shows instead: set with `extra={PROGRESS_LINE: True}`.
PROGRESS_LINE = "progress_line"


@dataclass(frozen=True)
class Step:
    """What the training loop knows after a batch (and at an epoch's start, with no batch done yet)."""

    epoch: int  # in progress, 1-based
    epochs: int
    step: int  # batches done in this epoch (a resumed epoch starts past 0)
    steps: int  # batches in an epoch
    images: int  # training images seen in this epoch


# -- the arithmetic (pure, unit-tested) ---------------------------------------------------------------------
def seconds_per_step(elapsed_s: float, steps_timed: int) -> float | None:
    """Mean step time of this epoch so far; None before a step has been timed."""
    return elapsed_s / steps_timed if steps_timed > 0 and elapsed_s > 0 else None


def epoch_seconds(finished_epochs_s: list[float], steps: int, step_s: float) -> float:
    """How long an epoch takes: the mean of the epochs finished in this process (validation and checkpoint
    included), or, before the first one ends, this epoch's pace times its steps."""
    if finished_epochs_s:
        return sum(finished_epochs_s) / len(finished_epochs_s)
    return steps * step_s


def eta_seconds(*, step: int, steps: int, epoch: int, epochs: int, step_s: float, epoch_s: float) -> float:
    """The rest of the run: this epoch's remaining steps at its pace, then the epochs after it at
    `epoch_s` each. An upper bound when early stopping ends the run sooner."""
    return max(steps - step, 0) * step_s + max(epochs - epoch, 0) * epoch_s


# -- the reporter ------------------------------------------------------------------------------------------
Listener = Callable[[dict[str, Any]], None]


class ProgressReporter:
    """Keeps the latest in-epoch progress for the heartbeat thread to read (`snapshot`) and tells listeners
    (a terminal bar) about every step and every finished epoch. Called from the training loop, read from
    other threads: the state is guarded by a lock, and a step costs no I/O."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last: Step | None = None
        self._last_at = 0.0  # clock time of the last report: a snapshot read later describes that moment
        self._reported_at = utcnow()
        self._epoch_started = 0.0  # clock time of the current epoch's first report
        self._first_step = 0  # its step then: a resumed epoch's earlier steps were not timed here
        self._first_images = 0
        self._finished_epochs_s: list[float] = []
        self._listeners: list[Listener] = []
        self.last_epoch: dict[str, Any] | None = None  # the last finished epoch's record (val accuracy)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def __call__(self, step: Step) -> None:
        """The training loop's `on_step`."""
        now = self._clock()
        with self._lock:
            if self._last is None or step.epoch != self._last.epoch:
                self._epoch_started, self._first_step, self._first_images = now, step.step, step.images
            self._last, self._last_at, self._reported_at = step, now, utcnow()
            # Every step passes here: the snapshot (read by the heartbeat when it is due) is built per step
            # only for a listener (a terminal bar).
            snapshot = self._snapshot() if self._listeners else None
        self._notify(snapshot)

    def epoch_finished(self, record: dict[str, Any]) -> None:
        """An epoch's record (after its validation and checkpoint): its whole time teaches the ETA."""
        now = self._clock()
        with self._lock:
            if self._last is not None and self._first_step == 0:  # a whole epoch timed in this process
                self._finished_epochs_s.append(now - self._epoch_started)
            self.last_epoch = record
            snapshot = self._snapshot()
        self._notify(snapshot)

    def snapshot(self) -> dict[str, Any] | None:
        """The run record's `progress`, or None before the training loop's first report."""
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> dict[str, Any] | None:
        last = self._last
        if last is None:
            return None
        elapsed = self._last_at - self._epoch_started
        step_s = seconds_per_step(elapsed, last.step - self._first_step)
        images_per_second = None
        eta = None
        if step_s is not None:
            images_per_second = round((last.images - self._first_images) / elapsed, 1)
            epoch_s = epoch_seconds(self._finished_epochs_s, last.steps, step_s)
            eta = eta_seconds(
                step=last.step,
                steps=last.steps,
                epoch=last.epoch,
                epochs=last.epochs,
                step_s=step_s,
                epoch_s=epoch_s,
            )
        return {
            "epoch": last.epoch,
            "epochs": last.epochs,
            "step": last.step,
            "steps": last.steps,
            "images": last.images,
            "images_per_second": images_per_second,
            "eta_seconds": None if eta is None else round(eta, 1),
            "updated_at": self._reported_at.isoformat(),
        }

    def _notify(self, snapshot: dict[str, Any] | None) -> None:
        if snapshot is None:
            return
        for listener in self._listeners:
            listener(snapshot)
