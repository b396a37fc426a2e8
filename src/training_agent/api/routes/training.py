"""Start a project's training and follow it (Requirements 9.1, 9.2)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query

from training_agent.api import service
from training_agent.api.blocking import run_blocking
from training_agent.api.deps import (
    ExecutorDep,
    MetricsDep,
    RecordsDep,
    SettingsDep,
    StorageDep,
    require_api_key,
)
from training_agent.api.middleware import StrictJSONRoute
from training_agent.api.schemas import (
    AUTH_RESPONSES,
    CancelResponse,
    ErrorResponse,
    StartRequest,
    StartResponse,
    StatusResponse,
)
from training_agent.core import logs as logctx

# StrictJSONRoute: NaN, Infinity, invalid UTF-8 or deep nesting in a body is a 422, as any malformed body.
router = APIRouter(
    prefix="/agents/training",
    tags=["training"],
    dependencies=[Depends(require_api_key)],
    route_class=StrictJSONRoute,
)


@router.post(
    "/start",
    response_model=StartResponse,
    responses={
        **AUTH_RESPONSES,
        400: {
            "model": ErrorResponse,
            "description": "Not in `pending_training`, no dataset, a dataset the pre-flight refused "
            "(the project is then `failed` with that reason), or a `callback_url` this server will not call",
        },
        404: {"model": ErrorResponse, "description": "No such project"},
        409: {"model": ErrorResponse, "description": "Another request started it first"},
        503: {"model": ErrorResponse, "description": "Records store, storage or executor unavailable"},
    },
)
async def start(
    body: StartRequest,
    records: RecordsDep,
    executor: ExecutorDep,
    settings: SettingsDep,
    storage: StorageDep,
    metrics: MetricsDep,
) -> StartResponse:
    """Start training a project in `pending_training`; it moves to `training` and a run begins."""
    logctx.bind(body.project_id)  # this request's log lines name the project and its run
    response = await run_blocking(
        service.start_training,
        body.project_id,
        records,
        executor,
        settings,
        storage,
        callback_url=body.callback_url,
    )
    metrics.runs_started.labels(executor=executor.name).inc()
    return response


@router.get(
    "/status/{project_id}",
    response_model=StatusResponse,
    responses={**AUTH_RESPONSES, 404: {"model": ErrorResponse, "description": "No such project"}},
)
async def status(
    project_id: UUID,
    records: RecordsDep,
    executor: ExecutorDep,
    limit: Annotated[int, Query(ge=0, le=500, description="How many of the newest agent_logs rows")] = 20,
) -> StatusResponse:
    """A project's status, its run's phase and progress, the model URL or the error, and recent logs."""
    logctx.bind(project_id)
    return await run_blocking(service.training_status, project_id, records, executor, limit)


@router.delete(
    "/{project_id}",
    response_model=CancelResponse,
    responses={
        **AUTH_RESPONSES,
        404: {"model": ErrorResponse, "description": "No such project, or no run for it"},
        409: {"model": ErrorResponse, "description": "The project is not training"},
    },
)
async def cancel(project_id: UUID, records: RecordsDep, executor: ExecutorDep) -> CancelResponse:
    """Cancel a project's run (the kubernetes executor deletes its TrainingRun)."""
    logctx.bind(project_id)
    return await run_blocking(service.cancel_training, project_id, records, executor)
