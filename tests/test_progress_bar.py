"""The terminal view of a run: a rich bar on a terminal, the plain log lines elsewhere (CI, pipes, files)."""

from __future__ import annotations

import io
import logging
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from tests.conftest import seed_project
from tests.support.datasets import DatasetFactory
from training_agent.core.records.sqlite import SQLiteRecords
from training_agent.progress_bar import (
    BarState,
    PlainLines,
    RichBar,
    follow_reporter,
    progress_view,
    state_from_snapshot,
    state_from_status,
)
from training_agent.trainer.progress import PROGRESS_LINE, ProgressReporter, Step

STATE = BarState(
    epochs_done=2,
    epoch=3,
    epochs=10,
    step=45,
    steps=100,
    images_per_second=812.4,
    eta_seconds=84.0,
    val_accuracy=0.875,
)


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=120), out


@pytest.fixture
def root_handler() -> Iterator[tuple[logging.StreamHandler[io.StringIO], io.StringIO]]:
    """A root log handler writing where the console writes, as the CLI's writes to stderr."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    yield handler, stream
    root.removeHandler(handler)
    root.setLevel(level)


def test_a_terminal_gets_the_bar_with_every_field() -> None:
    console, out = terminal()
    view = progress_view(console, announce_epochs=True)
    assert isinstance(view, RichBar)
    with view:
        view.update(STATE)
    shown = out.getvalue()
    for text in ("epoch 3/10", "step 45/100", "812 img/s", "ETA 1m24s", "val acc 0.875"):
        assert text in shown, text
    assert "\x1b[" in shown  # drawn in place with control codes, not as lines


def test_a_run_that_ended_keeps_its_last_epoch_on_the_bar() -> None:
    """The demo's last poll has no in-epoch report (the run is over): the bar says the last epoch, not
    "preparing" again."""
    console, out = terminal()
    with progress_view(console, announce_epochs=True) as view:
        view.update(STATE)
        view.update(BarState(epochs_done=10, epochs=10, eta_seconds=0.0, val_accuracy=0.9))
    frames = [
        line
        for line in re.split(r"[\r\n]", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue()))
        if "ETA" in line
    ]
    last = frames[-1]
    assert "epoch 10/10" in last and "ETA 0s" in last and "val acc 0.900" in last
    assert "step 45/100" in last and "preparing" not in last  # the steps it last knew stay


def test_log_lines_go_above_the_bar_except_the_per_step_ones(
    root_handler: tuple[logging.StreamHandler[io.StringIO], io.StringIO],
) -> None:
    handler, stream = root_handler
    console = Console(file=stream, force_terminal=True, width=120)
    with progress_view(console, announce_epochs=False) as view:
        view.update(STATE)
        logging.getLogger("training_agent.steps").info("Dataset downloaded")
        logging.getLogger("training_agent.trainer.engine").info(
            "epoch 3/10 step 45/100", extra={PROGRESS_LINE: True}
        )
    assert handler.stream is stream and not handler.filters  # put back as it was
    shown = stream.getvalue()
    assert "Dataset downloaded" in shown and "epoch 3/10 step 45/100" not in shown
    logging.getLogger("training_agent.trainer.engine").info("after", extra={PROGRESS_LINE: True})
    assert stream.getvalue().endswith("after\n")  # without a bar, the per-step lines are the progress


def test_no_terminal_gets_plain_lines(caplog: pytest.LogCaptureFixture) -> None:
    out = io.StringIO()
    view = progress_view(Console(file=out), announce_epochs=True)
    assert isinstance(view, PlainLines)
    caplog.set_level(logging.INFO, logger="training_agent.progress")
    with view:
        view.update(BarState(epochs_done=0, epoch=1, epochs=3, step=5, steps=10))
        view.update(BarState(epochs_done=1, epoch=2, epochs=3, val_accuracy=0.5, eta_seconds=12.0))
        view.update(BarState(epochs_done=1, epoch=2, epochs=3, step=7, steps=10))
    assert [r.getMessage() for r in caplog.records] == ["status: epoch 1/3, val_accuracy 0.5, eta 12.0s"]
    assert out.getvalue() == ""  # nothing drawn


def test_stderr_that_is_not_a_terminal_gets_plain_lines_even_with_force_color(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CI sets FORCE_COLOR or TTY_COMPATIBLE for colours; its logs must not become redraws."""
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    assert isinstance(progress_view(announce_epochs=False), PlainLines)
    console, _ = terminal()
    assert isinstance(
        progress_view(console, announce_epochs=False, bar=False), PlainLines
    )  # --no-progress-bar


def test_states_from_the_status_answer_and_the_reporter() -> None:
    status = {
        "epoch": 2,
        "total_epochs": 10,
        "val_accuracy": 0.8,
        "images_per_s": 700.0,
        "eta_seconds": 500.0,
    }
    assert state_from_status(status) == BarState(
        epochs_done=2, epochs=10, images_per_second=700.0, eta_seconds=500.0, val_accuracy=0.8
    )
    live = {
        "epoch": 3,
        "epochs": 10,
        "step": 45,
        "steps": 100,
        "images_per_second": 812.4,
        "eta_seconds": 84.0,
    }
    assert state_from_status({**status, "val_accuracy": 0.875, "live": live}) == STATE
    assert state_from_snapshot(live, {"epoch": 2, "val_accuracy": 0.875}) == STATE


def test_the_reporter_feeds_the_view() -> None:
    reporter = ProgressReporter()
    seen: list[BarState] = []

    class Recorder(PlainLines):
        def update(self, state: BarState) -> None:
            seen.append(state)

    follow_reporter(reporter, Recorder(announce_epochs=False))
    reporter(Step(1, 2, 0, 4, 0))
    reporter(Step(1, 2, 4, 4, 32))
    reporter.epoch_finished({"epoch": 1, "val_accuracy": 0.5})
    assert [(s.epoch, s.step, s.epochs_done, s.val_accuracy) for s in seen] == [
        (1, 0, 0, None),
        (1, 4, 0, None),
        (1, 4, 1, 0.5),
    ]


def test_train_on_a_real_terminal_draws_the_bar(tmp_path: Path, datasets: DatasetFactory) -> None:
    """`training-agent train` with its stderr on a pseudo-terminal: the bar, the stage lines above it, no
    per-step lines, no traceback, and stdout still one JSON object."""
    records = SQLiteRecords(tmp_path / "data" / "records.db")
    project = seed_project(records, str(datasets.shapes(per_class=(16, 4, 4))), metadata={"epochs": 2})
    primary, secondary = pty.openpty()
    env = {
        **os.environ,
        "TRAINING_AGENT_DATA_DIR": str(tmp_path / "data"),
        "TRAINING_AGENT_WORK_DIR": str(tmp_path / "work"),
        "TRAINING_AGENT_NUM_WORKERS": "0",
        "TRAINING_AGENT_LOG_EVERY_STEPS": "1",
        "COLUMNS": "160",
        "TERM": "xterm-256color",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "training_agent", "train", "--project-id", str(project.id), "--json"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=secondary,
    )
    os.close(secondary)
    shown = b""
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(primary, 65536)
                except OSError:  # the terminal closed: every process holding it has exited
                    break
                if not chunk:
                    break
                shown += chunk
            elif proc.poll() is not None:
                break
        stdout = proc.communicate(timeout=60)[0].decode()
    finally:
        os.close(primary)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = shown.decode(errors="replace")
    assert proc.returncode == 0, text
    assert '"succeeded": true' in stdout
    assert "step 4/4" in text and "img/s" in text and "ETA" in text and "\x1b[" in text
    assert "Dataset downloaded" in text  # the stages' lines, printed above the bar
    assert "epoch 1/2 step" not in text  # the per-step lines are what the bar replaces
    assert "Traceback" not in text
