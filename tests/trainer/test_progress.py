"""In-epoch progress: the ETA arithmetic, the reporter the training loop calls, the loop's calls, and the
heartbeat that carries the progress into the run record at its own pace."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import seed_project
from tests.trainer.test_engine import fitter
from training_agent.core.lease import run_of
from training_agent.core.records import RecordsStore
from training_agent.core.runs import StepProgress, step_progress
from training_agent.trainer.heartbeat import Heartbeat
from training_agent.trainer.progress import (
    ProgressReporter,
    Step,
    epoch_seconds,
    eta_seconds,
    seconds_per_step,
)


# -- the arithmetic -----------------------------------------------------------------------------------------
def test_eta_is_this_epochs_steps_left_then_the_epochs_after_it() -> None:
    # Epoch 3 of 10, 45 of 100 steps at 0.2 s, epochs of 25 s: 55 * 0.2 + 7 * 25.
    assert eta_seconds(step=45, steps=100, epoch=3, epochs=10, step_s=0.2, epoch_s=25.0) == pytest.approx(
        186.0
    )
    assert eta_seconds(step=100, steps=100, epoch=10, epochs=10, step_s=0.2, epoch_s=25.0) == 0.0
    # Never negative, even past the plan (a resumed epoch's count, a shortened schedule).
    assert eta_seconds(step=120, steps=100, epoch=11, epochs=10, step_s=0.2, epoch_s=25.0) == 0.0


def test_epoch_time_is_the_finished_epochs_mean_else_this_epochs_projection() -> None:
    assert epoch_seconds([], steps=100, step_s=0.2) == pytest.approx(20.0)
    assert epoch_seconds([24.0, 26.0], steps=100, step_s=0.2) == 25.0  # validation included


def test_step_time_needs_a_timed_step() -> None:
    assert seconds_per_step(3.0, 0) is None
    assert seconds_per_step(0.0, 5) is None
    assert seconds_per_step(3.0, 15) == pytest.approx(0.2)


# -- the reporter -------------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_reporter_snapshot_within_an_epoch() -> None:
    clock = Clock()
    reporter = ProgressReporter(clock=clock)
    assert reporter.snapshot() is None  # nothing before the loop's first report
    reporter(Step(epoch=1, epochs=4, step=0, steps=100, images=0))
    first = reporter.snapshot()
    assert first is not None and first["step"] == 0 and first["eta_seconds"] is None
    clock.now += 10.0
    reporter(Step(epoch=1, epochs=4, step=50, steps=100, images=1600))
    clock.now += 30.0  # read later: the snapshot still describes the moment of the last step
    snapshot = reporter.snapshot()
    assert snapshot is not None
    StepProgress.model_validate(snapshot)  # the shape the API and the controller read
    assert (snapshot["epoch"], snapshot["epochs"], snapshot["step"], snapshot["steps"]) == (1, 4, 50, 100)
    assert snapshot["images"] == 1600 and snapshot["images_per_second"] == 160.0
    # 0.2 s a step: 50 steps left, then 3 epochs projected at 100 steps each.
    assert snapshot["eta_seconds"] == pytest.approx(10.0 + 60.0)


def test_finished_epochs_teach_the_eta_and_a_resumed_epoch_is_not_one() -> None:
    clock = Clock()
    reporter = ProgressReporter(clock=clock)
    seen: list[dict[str, Any]] = []
    reporter.add_listener(seen.append)
    reporter(Step(1, 3, 0, 10, 0))
    clock.now += 2.0
    reporter(Step(1, 3, 10, 10, 80))
    clock.now += 3.0  # validation and checkpoint: part of what an epoch costs
    reporter.epoch_finished({"epoch": 1, "val_accuracy": 0.75})
    reporter(Step(2, 3, 0, 10, 0))
    clock.now += 1.0
    reporter(Step(2, 3, 5, 10, 40))
    snapshot = reporter.snapshot()
    assert snapshot is not None
    # 5 steps left at 0.2 s, then one more epoch at the measured 5 s (not the projected 2 s).
    assert snapshot["eta_seconds"] == pytest.approx(1.0 + 5.0)
    assert reporter.last_epoch == {"epoch": 1, "val_accuracy": 0.75}
    assert [s["step"] for s in seen] == [0, 10, 10, 0, 5]  # every step and the finished epoch

    resumed = ProgressReporter(clock=clock)
    resumed(Step(2, 3, 6, 10, 48))  # a restarted trainer continues epoch 2 at step 6
    clock.now += 0.8
    resumed(Step(2, 3, 10, 10, 80))
    resumed.epoch_finished({"epoch": 2})
    resumed(Step(3, 3, 0, 10, 0))
    clock.now += 0.4
    resumed(Step(3, 3, 2, 10, 16))
    snapshot = resumed.snapshot()
    assert snapshot is not None
    # Only 4 of epoch 2's steps were timed here: it teaches no epoch time; the last epoch is projected.
    assert snapshot["eta_seconds"] == pytest.approx(8 * 0.2)
    assert snapshot["images_per_second"] == pytest.approx(40.0)


def test_the_training_loop_reports_every_step_and_each_epochs_start() -> None:
    steps: list[Step] = []
    fitter(epochs=2).fit(lambda record: None, lambda: None, on_step=steps.append)
    per_epoch = 5  # 40 training images, batches of 8
    assert len(steps) == 2 * (per_epoch + 1)
    assert [(s.epoch, s.step) for s in steps[: per_epoch + 1]] == [(1, i) for i in range(per_epoch + 1)]
    assert {(s.epochs, s.steps) for s in steps} == {(2, per_epoch)}
    assert steps[per_epoch].images == 40 and steps[per_epoch + 1] == Step(2, 2, 0, per_epoch, 0)


# -- the heartbeat ------------------------------------------------------------------------------------------
def wait_for(check: Any, what: str, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"not {what} after {timeout_s} s")


def test_heartbeat_writes_progress_when_it_moves_and_not_otherwise(records: RecordsStore) -> None:
    project = seed_project(records, "gs://bucket/d.zip", status="training")
    reporter = ProgressReporter()

    def live() -> StepProgress | None:
        current = records.get_project(project.id)
        return step_progress(run_of(current)) if current else None

    heartbeat = Heartbeat(
        records,
        project.id,
        "run-1",
        interval_s=60.0,  # the lease alone would not write again during this test
        attempt=1,
        on_lost=lambda: None,
        progress=reporter.snapshot,
        progress_every_s=0.05,
    )
    heartbeat.start()
    try:
        assert live() is None  # the first beat comes before any training step
        reporter(Step(1, 2, 0, 10, 0))
        reporter(Step(1, 2, 3, 10, 24))
        assert wait_for(lambda: (p := live()) and p.step == 3 and p, "step 3 written").images == 24
        beat = run_of(records.get_project(project.id))["heartbeat_at"]  # type: ignore[arg-type]
        time.sleep(0.3)  # several ticks without a step: nothing to write
        assert run_of(records.get_project(project.id))["heartbeat_at"] == beat  # type: ignore[arg-type]
        reporter(Step(1, 2, 7, 10, 56))
        wait_for(lambda: (p := live()) and p.step == 7, "step 7 written")
    finally:
        heartbeat.stop()
