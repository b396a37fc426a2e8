"""Pick the executor named by TRAINING_AGENT_EXECUTOR."""

from __future__ import annotations

from training_agent.api.executors.base import Executor, OnFinish
from training_agent.api.executors.local import LocalExecutor
from training_agent.core.records import RecordsStore
from training_agent.core.settings import Settings

__all__ = ["Executor", "LocalExecutor", "OnFinish", "make_executor"]


def make_executor(settings: Settings, records: RecordsStore, on_finish: OnFinish | None = None) -> Executor:
    if settings.executor == "kubernetes":
        # Imported here: the local mode never needs the kubernetes client.
        from training_agent.api.executors.kubernetes import KubernetesExecutor

        return KubernetesExecutor(settings, records, on_finish=on_finish)
    return LocalExecutor(settings, records, on_finish=on_finish)
