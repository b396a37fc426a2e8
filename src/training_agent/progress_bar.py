"""What `training-agent train` and `training-agent demo` show while a run trains: a live `rich` progress bar
(epoch, step/steps, images/s, ETA, last val accuracy) when stderr is a terminal, and the plain log lines
otherwise (CI, pipes, files, the trainers a server starts), exactly as without it.

While the bar is drawn, the process's log lines are printed above it through the same console (so neither
garbles the other), except the training loop's per-step lines, which the bar replaces.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any

from rich.console import Console
from rich.file_proxy import FileProxy
from rich.progress import BarColumn, Progress, TextColumn

from training_agent.core.runs import duration_text
from training_agent.trainer.progress import PROGRESS_LINE, ProgressReporter

logger = logging.getLogger("training_agent.progress")


@dataclass(frozen=True)
class BarState:
    """One moment of a run, from whichever source the command has."""

    epochs_done: int = 0  # epochs finished (validated)
    epoch: int = 0  # the epoch in progress, 1-based; 0 before the training loop starts
    epochs: int | None = None
    step: int | None = None
    steps: int | None = None
    images_per_second: float | None = None
    eta_seconds: float | None = None
    val_accuracy: float | None = None  # of the last finished epoch


def state_from_snapshot(snapshot: dict[str, Any], last_epoch: dict[str, Any] | None) -> BarState:
    """`train`: the in-process reporter's snapshot (trainer/progress.py) and the last epoch's record."""
    last = last_epoch or {}
    return BarState(
        epochs_done=int(last.get("epoch") or 0),
        epoch=int(snapshot["epoch"]),
        epochs=snapshot.get("epochs"),
        step=snapshot.get("step"),
        steps=snapshot.get("steps"),
        images_per_second=snapshot.get("images_per_second"),
        eta_seconds=snapshot.get("eta_seconds"),
        val_accuracy=last.get("val_accuracy"),
    )


def state_from_status(progress: dict[str, Any]) -> BarState:
    """`demo`: the status answer's `progress`, its in-epoch `live` part when the trainer reported one."""
    live = progress.get("live") or {}
    return BarState(
        epochs_done=int(progress.get("epoch") or 0),
        epoch=int(live.get("epoch") or 0),
        epochs=live.get("epochs") or progress.get("total_epochs"),
        step=live.get("step"),
        steps=live.get("steps"),
        images_per_second=live.get("images_per_second") or progress.get("images_per_s"),
        eta_seconds=live["eta_seconds"]
        if live.get("eta_seconds") is not None
        else progress.get("eta_seconds"),
        val_accuracy=progress.get("val_accuracy"),
    )


class PlainLines:
    """No bar: the log lines carry the progress. `announce_epochs` logs a line per finished epoch (the
    demo's, which follows a trainer in another process); `train`'s own loop already logs its steps."""

    def __init__(self, *, announce_epochs: bool) -> None:
        self.announce_epochs = announce_epochs
        self._epochs_done = 0

    def __enter__(self) -> PlainLines:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, state: BarState) -> None:
        if not self.announce_epochs or state.epochs_done == self._epochs_done:
            return
        self._epochs_done = state.epochs_done
        logger.info(
            "status: epoch %s/%s, val_accuracy %s, eta %ss",
            state.epochs_done,
            state.epochs,
            state.val_accuracy,
            state.eta_seconds,
        )


class _DropProgressLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, PROGRESS_LINE, False)


class RichBar:
    """The live bar on `console`; the log lines of handlers writing to the same terminal go above it."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[steps]}"),
            TextColumn("{task.fields[speed]}"),
            TextColumn("ETA {task.fields[eta]}"),
            TextColumn("val acc {task.fields[val]}"),
            console=console,
            transient=True,  # the command's own summary follows; a finished bar would only repeat it
            redirect_stdout=False,  # the log handlers are redirected below; stdout carries --json output
            redirect_stderr=False,
        )
        self._task = self._bar.add_task("preparing", total=None, steps="", speed="", eta="-", val="-")
        self._redirected: list[tuple[logging.StreamHandler[Any], IO[str]]] = []
        self._filter = _DropProgressLines()

    def __enter__(self) -> RichBar:
        self._bar.start()
        targets = {id(stream) for stream in (sys.stderr, sys.__stderr__, self.console.file)}
        for handler in logging.getLogger().handlers:
            if not isinstance(handler, logging.StreamHandler):
                continue
            stream = handler.stream
            if id(stream) in targets:
                self._redirected.append((handler, stream))
                handler.setStream(FileProxy(self.console, stream))
                handler.addFilter(self._filter)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._bar.stop()
        for handler, stream in self._redirected:
            handler.removeFilter(self._filter)
            proxy = handler.setStream(stream)
            if proxy is not None:
                proxy.flush()
        self._redirected.clear()

    def update(self, state: BarState) -> None:
        fields: dict[str, Any] = {
            "description": _describe(state),
            "speed": f"{state.images_per_second:,.0f} img/s" if state.images_per_second is not None else "",
            "eta": duration_text(state.eta_seconds) if state.eta_seconds is not None else "-",
            "val": f"{state.val_accuracy:.3f}" if state.val_accuracy is not None else "-",
        }
        if state.steps:
            fields.update(
                total=state.steps, completed=state.step or 0, steps=f"step {state.step}/{state.steps}"
            )
        # Without an in-epoch report (not yet, or the run has ended) the bar keeps what it last showed.
        self._bar.update(self._task, **fields)


def _describe(state: BarState) -> str:
    epoch = state.epoch or state.epochs_done  # in progress, else the last finished
    if not epoch:
        return "preparing"
    return f"epoch {epoch}/{state.epochs}" if state.epochs else f"epoch {epoch}"


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_view(
    console: Console | None = None, *, announce_epochs: bool, bar: bool = True
) -> RichBar | PlainLines:
    """A live bar when the console is an interactive terminal (and `bar`), else plain lines. Without a
    console: stderr's, a terminal only when stderr really is one (FORCE_COLOR and the like in CI must not
    turn its logs into redraws)."""
    if console is None:
        console = Console(file=sys.stderr, force_terminal=_is_terminal(sys.stderr))
    if bar and console.is_terminal and not console.is_dumb_terminal:
        return RichBar(console)
    return PlainLines(announce_epochs=announce_epochs)


def follow_reporter(reporter: ProgressReporter, view: RichBar | PlainLines) -> None:
    """`train`: every step and finished epoch the in-process trainer reports goes to `view`."""
    reporter.add_listener(lambda snapshot: view.update(state_from_snapshot(snapshot, reporter.last_epoch)))
