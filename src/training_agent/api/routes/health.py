"""Liveness, readiness and metrics: open without the API key, for probes and scrapers."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from training_agent import __version__
from training_agent.api.blocking import run_blocking
from training_agent.api.deps import ExecutorDep, MetricsDep, RecordsDep, SettingsDep
from training_agent.api.executors import Executor
from training_agent.api.schemas import HealthResponse, ReadyResponse
from training_agent.core.records import RecordsStore
from training_agent.core.settings import Settings
from training_agent.core.storage import ObjectStorage

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthResponse)
async def health(settings: SettingsDep) -> HealthResponse:
    """Liveness: the process answers."""
    return HealthResponse(version=__version__, executor=settings.executor)


def _check_storage(settings: Settings) -> None:
    if settings.gcp_bucket_name:
        ObjectStorage(settings).gcs.ping(settings.gcp_bucket_name)
        return
    folder = settings.resolved_local_bucket_dir
    folder.mkdir(parents=True, exist_ok=True)
    if not folder.is_dir():
        raise OSError(f"{folder} is not a folder")


def _run_checks(settings: Settings, records: RecordsStore, executor: Executor) -> dict[str, str]:
    checks: dict[str, str] = {}
    for name, check in (
        ("records", records.ping),
        ("storage", lambda: _check_storage(settings)),
        ("executor", executor.ping),
    ):
        try:
            check()
            checks[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", and says why
            checks[name] = f"{type(exc).__name__}: {exc}"
    return checks


@router.get("/ready", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
async def ready(settings: SettingsDep, records: RecordsDep, executor: ExecutorDep) -> Response:
    """Readiness: the records store, storage and executor can be reached (503 names the ones that cannot)."""
    checks = await run_blocking(_run_checks, settings, records, executor)
    ok = all(v == "ok" for v in checks.values())
    body = ReadyResponse(status="ready" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(metrics: MetricsDep, executor: ExecutorDep) -> Response:
    """Prometheus metrics: runs started, finished and active; requests by route (count, latency, sizes)."""
    # The kubernetes executor counts by listing TrainingRuns: a call to the cluster, off the event loop.
    for state, value in (await run_blocking(executor.counts)).items():
        metrics.runs_active.labels(state=state).set(value)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
