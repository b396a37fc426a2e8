"""Assemble the FastAPI app: routers, middleware, error handlers, and the executor's lifecycle."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from asgi_correlation_id import correlation_id
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from training_agent import __version__
from training_agent.api import mcp_server, middleware
from training_agent.api.blocking import set_max_threads
from training_agent.api.errors import ApiError
from training_agent.api.executors import Executor, make_executor
from training_agent.api.metrics import ApiMetrics
from training_agent.api.reaper import Reaper
from training_agent.api.routes import health, runs, training
from training_agent.core.errors import RecordsError, StorageError
from training_agent.core.records import RecordsStore, open_records
from training_agent.core.settings import Settings, get_settings

logger = logging.getLogger(__name__)

DESCRIPTION = """Trains torchvision image classifiers for the AutoML agents.

`POST /agents/training/start` accepts a project in `pending_training`; `GET /agents/training/status/{id}`
follows it to `pending_evaluation` or `failed`. With `MCP_API_KEY` set, the training routes need
`Authorization: Bearer <key>`."""


def _request_id(request: Request) -> str:
    return correlation_id.get() or "-"


def _readable(error: dict[str, Any]) -> dict[str, Any]:
    # FastAPI says only "JSON decode error"; the parser's reason is what tells a caller what to fix.
    if error.get("type") == "json_invalid":
        return {**error, "msg": f"The body is not valid JSON: {error.get('ctx', {}).get('error')}"}
    return error


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_readable(error) for error in exc.errors()]
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(RecordsError)
    @app.exception_handler(StorageError)
    async def dependency_down(request: Request, exc: Exception) -> JSONResponse:
        logger.warning("request %s: %s", _request_id(request), exc)
        return JSONResponse({"detail": f"A backing service is unavailable: {exc}"}, status_code=503)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The traceback stays in the server log, found by the request id the client got.
        request_id = _request_id(request)
        logger.error("request %s failed", request_id, exc_info=exc)
        return JSONResponse(
            {"detail": f"Internal server error (request id {request_id})"},
            status_code=500,
            headers={"x-request-id": request_id},
        )


def create_app(
    settings: Settings | None = None,
    *,
    records: RecordsStore | None = None,
    executor: Executor | None = None,
) -> FastAPI:
    """The app. Without arguments it uses the environment's settings, records and executor."""
    settings = settings or get_settings()
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        set_max_threads(settings.resolved_api_threads)
        app.state.records = records or open_records(settings)
        app.state.executor = executor or make_executor(
            settings,
            app.state.records,
            on_finish=lambda _project, phase: metrics.run_finished(settings.executor, phase),
        )
        # Runs a previous server process left behind are settled before new ones are accepted; then the
        # reaper fails local and CLI runs whose trainer stopped heart-beating (now, and every few seconds).
        await run_in_threadpool(app.state.executor.recover)
        app.state.reaper = Reaper(settings, app.state.records, app.state.executor)
        await run_in_threadpool(app.state.reaper.start)
        try:
            yield
        finally:
            await run_in_threadpool(app.state.reaper.stop)
            await run_in_threadpool(app.state.executor.shutdown)

    # /docs and /redoc with Swagger UI's and ReDoc's files served by the app itself: no CDN, so they work
    # on a cluster without internet; no online validator badge either.
    app = FastAPIOffline(
        title="Training Agent",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.include_router(training.router)
    app.include_router(health.router)
    app.include_router(runs.router)
    app.include_router(mcp_server.router(app))  # MCP tools at /mcp
    _install_error_handlers(app)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "DELETE"],  # DELETE: the cancel route
            allow_headers=["Authorization", "Content-Type"],
        )
    middleware.install(app, metrics, max_request_bytes=settings.max_request_bytes)
    return app
