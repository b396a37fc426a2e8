"""The API's run metrics, in a registry per app so that several apps (tests) never share counters; the
request metrics (`http_requests_total`, ...) join the same registry from prometheus-fastapi-instrumentator
(middleware.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

from training_agent.core.runs import RunPhase

_OUTCOMES = {RunPhase.SUCCEEDED: "succeeded", RunPhase.CANCELLED: "cancelled"}


@dataclass
class ApiMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.runs_started = Counter(
            "training_agent_runs_started_total",
            "Training runs accepted",
            ["executor"],
            registry=self.registry,
        )
        self.runs_finished = Counter(
            "training_agent_runs_finished_total",
            "Training runs that ended, by outcome",
            ["executor", "outcome"],
            registry=self.registry,
        )
        self.runs_active = Gauge(
            "training_agent_runs_active", "Runs running or queued now", ["state"], registry=self.registry
        )

    def run_finished(self, executor: str, phase: RunPhase) -> None:
        self.runs_finished.labels(executor=executor, outcome=_OUTCOMES.get(phase, "failed")).inc()
