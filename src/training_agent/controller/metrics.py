"""The controller's Prometheus metrics, served by prometheus-client on TRAINING_AGENT_CONTROLLER_METRICS_PORT.

One registry per operator (not the process-wide default), so that several operators in one process (tests)
never share counters. The reconciler reports what it decided; this module only counts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from training_agent.core.errors import ConfigurationError
from training_agent.core.runs import RunPhase

logger = logging.getLogger(__name__)

# Creating a Job takes a few API calls; waiting longer means a slow API server or a backlog of runs.
_JOB_DELAY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


class ControllerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "training_agent_controller_reconciles_total",
            "Reconciles of a TrainingRun, by result (ok, gone: the run was deleted, error)",
            ["result"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "training_agent_controller_reconcile_duration_seconds",
            "How long one reconcile of a TrainingRun took",
            ["result"],
            registry=self.registry,
        )
        self.runs = Gauge(
            "training_agent_controller_runs",
            "TrainingRuns this controller reconciled, by their current phase",
            ["phase"],
            registry=self.registry,
        )
        self.job_creation_seconds = Histogram(
            "training_agent_controller_job_creation_delay_seconds",
            "Seconds from a TrainingRun's creation to the creation of its Job",
            buckets=_JOB_DELAY_BUCKETS,
            registry=self.registry,
        )
        self.leases_expired = Counter(
            "training_agent_controller_leases_expired_total",
            "Running runs failed because their trainer stopped renewing its lease",
            registry=self.registry,
        )
        self.job_failures = Counter(
            "training_agent_controller_job_failures_total",
            "Runs that ended Failed, by the reason the controller derived (OOMKilled, DeadlineExceeded, ...)",
            ["reason"],
            registry=self.registry,
        )
        self._phases: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        for phase in RunPhase:  # every phase present from the start: dashboards see 0, not "no data"
            self.runs.labels(phase=phase.value).set(0)

    @contextmanager
    def reconciling(self) -> Iterator[dict[str, str]]:
        """Time one reconcile; the body sets `result` in the dict it gets (an exception counts as error)."""
        outcome = {"result": "ok"}
        started = time.perf_counter()
        try:
            yield outcome
        except BaseException:
            outcome["result"] = "error"
            raise
        finally:
            self.reconciles.labels(result=outcome["result"]).inc()
            self.reconcile_seconds.labels(result=outcome["result"]).observe(time.perf_counter() - started)

    def phase(self, namespace: str, name: str, phase: RunPhase | None) -> None:
        """The run's phase now (None: the run is gone)."""
        with self._lock:
            if phase is None:
                self._phases.pop((namespace, name), None)
            else:
                self._phases[(namespace, name)] = phase.value
            counts = {p.value: 0 for p in RunPhase}
            for value in self._phases.values():
                counts[value] += 1
            for value, count in counts.items():
                self.runs.labels(phase=value).set(count)

    def job_created(self, run: dict[str, Any], now: datetime | None = None) -> None:
        created = _parse_time((run.get("metadata") or {}).get("creationTimestamp"))
        if created is not None:
            delay = ((now or datetime.now(timezone.utc)) - created).total_seconds()
            self.job_creation_seconds.observe(max(delay, 0.0))


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def serve_metrics(metrics: ControllerMetrics, port: int, host: str) -> WSGIServer | None:
    """Serve /metrics on `host:port` from a daemon thread; None when the port is 0 (off). Returns the server,
    to shut down with the operator."""
    if port == 0:
        return None
    try:
        server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise ConfigurationError(
            f"Cannot serve the controller's metrics on port {port}: {exc.strerror or exc}; set "
            "TRAINING_AGENT_CONTROLLER_METRICS_PORT to a free port (0: no metrics)"
        ) from exc
    logger.info("Serving Prometheus metrics on http://%s:%d/metrics", host, port)
    return server
