"""List the runs the training agent knows, and read a project's logs (also MCP tools at /mcp)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query

from training_agent.api import queries
from training_agent.api.blocking import run_blocking
from training_agent.api.deps import RecordsDep, require_api_key
from training_agent.api.schemas import AUTH_RESPONSES, ErrorResponse, LogsResponse, RunsResponse
from training_agent.core.records import LogLevel, ProjectStatus

router = APIRouter(prefix="/agents/training", tags=["training"], dependencies=[Depends(require_api_key)])


@router.get("/runs", response_model=RunsResponse, responses=AUTH_RESPONSES)
async def runs(
    records: RecordsDep,
    status: Annotated[
        ProjectStatus | None, Query(description="Only projects in this status (default: all four)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="How many projects at most")] = 50,
) -> RunsResponse:
    """Projects in the training agent's statuses and their runs, most recently updated first."""
    return await run_blocking(queries.list_runs, records, status, limit)


@router.get(
    "/logs/{project_id}",
    response_model=LogsResponse,
    responses={**AUTH_RESPONSES, 404: {"model": ErrorResponse, "description": "No such project"}},
)
async def logs(
    project_id: UUID,
    records: RecordsDep,
    level: Annotated[LogLevel | None, Query(description="Only rows at this level or above")] = None,
    tail: Annotated[int, Query(ge=1, le=1000, description="How many of the newest rows")] = 100,
) -> LogsResponse:
    """A project's newest `agent_logs` rows, oldest first."""
    return await run_blocking(queries.training_logs, project_id, records, level, tail)
