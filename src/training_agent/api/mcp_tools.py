"""The MCP tools: the training routes' operations, answering with the routes' own response models (as
structured content) and failing with the routes' own one-sentence messages (as tool errors).

Each tool reads the app's records, executor and storage from `app.state` when it is called, so the tools
see exactly what the HTTP routes see, and calls the same service functions off the event loop."""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, ParamSpec, TypeVar
from uuid import UUID

import anyio
from fastapi import FastAPI
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from training_agent.api import queries, service
from training_agent.api.blocking import run_blocking
from training_agent.api.deps import app_storage
from training_agent.api.errors import ApiError
from training_agent.api.schemas import (
    CancelResponse,
    DatasetCheck,
    LogsResponse,
    RunsResponse,
    StartResponse,
    StatusResponse,
    WaitResult,
)
from training_agent.core.errors import RecordsError, StorageError
from training_agent.core.records import LogLevel, ProjectStatus

P = ParamSpec("P")
T = TypeVar("T")

MAX_WAIT_S = 3600.0
_READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)

ProjectId = Annotated[UUID, Field(description="The project's id (its `projects` row)")]


class Refusal(Exception):
    """What the HTTP route would have answered with an error status: its message and that status."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


async def _call(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a blocking service call off the event loop; its errors become Refusals with the route's message
    and status."""
    try:
        return await run_blocking(func, *args, **kwargs)
    except ApiError as exc:
        raise Refusal(exc.detail, exc.status_code) from exc
    except (RecordsError, StorageError) as exc:  # the routes' 503
        raise Refusal(f"A backing service is unavailable: {exc}", 503) from exc


async def _respond(answer: Awaitable[BaseModel]) -> CallToolResult:
    """The tool's result: the route's response as structured content (and as JSON text, for clients that
    read only text); or a tool error whose text is exactly the route's one-sentence message (the SDK's
    ToolError would prefix it), with `{"detail", "status_code"}` as structured content."""
    try:
        data = (await answer).model_dump(mode="json")
    except Refusal as refusal:
        return CallToolResult(
            content=[TextContent(type="text", text=refusal.message)],
            structured_content={"detail": refusal.message, "status_code": refusal.status_code},
            is_error=True,
        )
    return CallToolResult(
        content=[TextContent(type="text", text=json.dumps(data, indent=2))], structured_content=data
    )


def _epochs_done(status: StatusResponse) -> tuple[float, float | None]:
    """How far the run is, in epochs (fractions from the trainer's in-epoch report), and of how many."""
    progress = status.progress
    done = float(progress.epoch)
    total = progress.total_epochs
    live = progress.live
    if live is not None:
        total = total or live.epochs
        if live.steps:
            done = max(done, live.epoch - 1 + live.step / live.steps)
    return done, float(total) if total else None


def _progress_message(status: StatusResponse) -> str:
    progress = status.progress
    parts = [f"{status.status}: epoch {progress.epoch}/{progress.total_epochs or '?'}"]
    if progress.live is not None and progress.live.epoch > progress.epoch:  # older reports lag the epochs
        parts.append(f"batch {progress.live.step}/{progress.live.steps} of epoch {progress.live.epoch}")
    if progress.val_accuracy is not None:
        parts.append(f"val accuracy {progress.val_accuracy:.3f}")
    return ", ".join(parts)


def _start(app: FastAPI, project_id: UUID, callback_url: str | None = None) -> StartResponse:
    """The start route's work, counted in the same metric."""
    state = app.state
    response = service.start_training(
        project_id,
        state.records,
        state.executor,
        state.settings,
        app_storage(app),
        callback_url=callback_url,
    )
    state.metrics.runs_started.labels(executor=state.executor.name).inc()
    return response


class TrainingTools:
    """The tools, bound to one app. `poll_s`: how often `wait_for_training` reads the status.

    Each returns `Annotated[CallToolResult, Model]`: the SDK publishes Model's JSON schema as the tool's
    output schema and checks successful results against it, while the tool itself shapes its errors."""

    def __init__(self, app: FastAPI, *, poll_s: float = 1.0) -> None:
        self.app = app
        self.poll_s = poll_s

    def register(self, server: MCPServer) -> None:
        tools = (
            (self.start_training, ToolAnnotations(destructive_hint=False)),
            (self.get_training_status, _READ_ONLY),
            (self.cancel_training, ToolAnnotations(destructive_hint=True)),
            (self.list_training_runs, _READ_ONLY),
            (self.get_training_logs, _READ_ONLY),
            (self.wait_for_training, _READ_ONLY),
            (self.check_dataset, _READ_ONLY),
        )
        for tool, hints in tools:
            # getdoc: the docstring without its source indentation, which the SDK would keep.
            server.add_tool(tool, description=inspect.getdoc(tool), annotations=hints)

    async def start_training(
        self,
        project_id: ProjectId,
        callback_url: Annotated[
            str | None,
            Field(
                description="Optional http(s) URL told the outcome by a signed POST when the run ends; "
                "its host must be in TRAINING_AGENT_CALLBACK_ALLOWED_HOSTS"
            ),
        ] = None,
    ) -> Annotated[CallToolResult, StartResponse]:
        """Start training a project in `pending_training`: it moves to `training` and a run begins (like
        POST /agents/training/start). Fails when the project is not `pending_training`, has no dataset, or
        its dataset's layout is refused (the project is then `failed` with that reason), or when the
        callback URL is not allowed."""
        return await _respond(_call(_start, self.app, project_id, callback_url))

    async def get_training_status(
        self,
        project_id: ProjectId,
        logs: Annotated[int, Field(ge=0, le=500, description="How many of the newest agent_logs rows")] = 20,
    ) -> Annotated[CallToolResult, StatusResponse]:
        """A project's status, its run's phase and progress, the model URL or the error, and its newest
        logs (like GET /agents/training/status/{project_id})."""
        return await _respond(self._status(project_id, logs))

    async def cancel_training(self, project_id: ProjectId) -> Annotated[CallToolResult, CancelResponse]:
        """Cancel a project's run; the project ends `failed` with the reason "Cancelled" (like
        DELETE /agents/training/{project_id})."""
        state = self.app.state
        return await _respond(_call(service.cancel_training, project_id, state.records, state.executor))

    async def list_training_runs(
        self,
        status: Annotated[
            ProjectStatus | None, Field(description="Only projects in this status (default: all four)")
        ] = None,
        limit: Annotated[int, Field(ge=1, le=500, description="How many projects at most")] = 50,
    ) -> Annotated[CallToolResult, RunsResponse]:
        """Projects in the training agent's statuses and their runs, most recently updated first (like
        GET /agents/training/runs)."""
        return await _respond(_call(queries.list_runs, self.app.state.records, status, limit))

    async def get_training_logs(
        self,
        project_id: ProjectId,
        level: Annotated[LogLevel | None, Field(description="Only rows at this level or above")] = None,
        tail: Annotated[int, Field(ge=1, le=1000, description="How many of the newest rows")] = 100,
    ) -> Annotated[CallToolResult, LogsResponse]:
        """A project's newest `agent_logs` rows, oldest first (like
        GET /agents/training/logs/{project_id})."""
        records = self.app.state.records
        return await _respond(_call(queries.training_logs, project_id, records, level, tail))

    async def wait_for_training(
        self,
        project_id: ProjectId,
        ctx: Context,
        timeout_s: Annotated[
            float,
            Field(ge=0, le=MAX_WAIT_S, description="Return after this long even if it is still running"),
        ] = 600.0,
    ) -> Annotated[CallToolResult, WaitResult]:
        """Wait until the project's run ends (it leaves `training`) or `timeout_s` passes, reporting the
        run's progress in epochs meanwhile when the call carries a progress token; returns the status and
        whether the wait timed out. Call it again to keep waiting."""
        return await _respond(self._wait(project_id, timeout_s, ctx))

    async def check_dataset(self, project_id: ProjectId) -> Annotated[CallToolResult, DatasetCheck]:
        """Check the project's dataset layout the way a start does (splits, classes, counts, sizes, from
        the zip's listing) without starting anything or changing the project: `ok`, or the reason it would
        be refused, and the classes and image counts seen."""
        state = self.app.state
        storage = app_storage(self.app)
        return await _respond(
            _call(queries.check_dataset, project_id, state.records, storage, state.settings)
        )

    async def _status(self, project_id: UUID, logs: int) -> StatusResponse:
        state = self.app.state
        return await _call(service.training_status, project_id, state.records, state.executor, logs)

    async def _wait(self, project_id: UUID, timeout_s: float, ctx: Context) -> WaitResult:
        started = time.monotonic()
        reported: float | None = None
        while True:
            status = await self._status(project_id, 20)
            waited = time.monotonic() - started
            running = status.status == ProjectStatus.TRAINING.value
            if not running or waited >= timeout_s:
                return WaitResult(timed_out=running, waited_s=round(waited, 3), status=status)
            done, total = _epochs_done(status)
            # MCP requires each progress value to be greater than the last: report only when it moved.
            if reported is None or done > reported:
                await ctx.report_progress(done, total, _progress_message(status))
                reported = done
            await anyio.sleep(min(self.poll_s, timeout_s - waited))
