"""Dependencies for the routes. The app keeps its settings, records store and executor in `app.state`.

They are `async def` on purpose: FastAPI runs plain `def` dependencies in its thread pool, a hop that cost
more than half of the throughput of `GET /health` (benchmarks/api_load.py)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from training_agent.api.executors import Executor
from training_agent.api.metrics import ApiMetrics
from training_agent.core.records import RecordsStore
from training_agent.core.settings import Settings
from training_agent.core.storage import ObjectStorage


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_records(request: Request) -> RecordsStore:
    records: RecordsStore = request.app.state.records
    return records


async def get_executor(request: Request) -> Executor:
    executor: Executor = request.app.state.executor
    return executor


def app_storage(app: FastAPI) -> ObjectStorage:
    # One per app, made on first use: its GCS client (and credentials) are built once, not per request.
    if getattr(app.state, "storage", None) is None:
        app.state.storage = ObjectStorage(app.state.settings)
    storage: ObjectStorage = app.state.storage
    return storage


async def get_storage(request: Request) -> ObjectStorage:
    return app_storage(request.app)


async def get_metrics(request: Request) -> ApiMetrics:
    metrics: ApiMetrics = request.app.state.metrics
    return metrics


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
RecordsDep = Annotated[RecordsStore, Depends(get_records)]
ExecutorDep = Annotated[Executor, Depends(get_executor)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
StorageDep = Annotated[ObjectStorage, Depends(get_storage)]

_bearer = HTTPBearer(auto_error=False, description="MCP_API_KEY, when the server has one set")


async def require_api_key(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """With MCP_API_KEY set, callers must send `Authorization: Bearer <key>`."""
    check_api_key(settings, credentials.credentials if credentials else None)


def check_api_key(settings: Settings, token: str | None) -> None:
    """Raise 401 unless MCP_API_KEY is unset or `token` is it (the training routes and /mcp share it)."""
    if settings.mcp_api_key is None:
        return
    expected = settings.mcp_api_key.get_secret_value().encode()
    given = token.encode() if token else b""
    # Constant-time comparison: response timing must not reveal how much of a guess was right.
    if not hmac.compare_digest(given, expected):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="Missing or invalid API key: send 'Authorization: Bearer <MCP_API_KEY>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
