"""The pods of a run of several nodes, one worker per Job completion index: what `status.workers` shows,
and which node's failure a failed run is reported with. Pure functions of the pods, like status.py."""

from __future__ import annotations

import dataclasses
from typing import Any

from training_agent.controller.status import Observed, completion_index
from training_agent.core.runs import RunPhase


def _created(pod: dict[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("creationTimestamp") or "")


def pods_by_index(pods: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Each index's pods, oldest first (a failed pod is replaced by a new one of the same index)."""
    grouped: dict[int, list[dict[str, Any]]] = {}
    for pod in sorted(pods, key=_created):
        index = completion_index(pod)
        if index is not None:
            grouped.setdefault(index, []).append(pod)
    return dict(sorted(grouped.items()))


def _trainer_state(pod: dict[str, Any]) -> dict[str, Any]:
    """The trainer container's state: {"terminated": {...}}, {"waiting": {...}} or {"running": {...}}."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if isinstance(status, dict):
            return dict(status.get("state") or {})
    return {}


def worker_state(index: int, attempts: list[dict[str, Any]]) -> dict[str, Any]:
    """One worker for status.workers: its latest pod, that pod's phase and why it ended or waits."""
    pod = attempts[-1]
    status = pod.get("status") or {}
    worker: dict[str, Any] = {
        "index": index,
        "pod": (pod.get("metadata") or {}).get("name", ""),
        "phase": status.get("phase") or "Pending",
        "attempts": len(attempts),
    }
    state = _trainer_state(pod)
    ended = state.get("terminated") or {}
    waiting = state.get("waiting") or {}
    reason = status.get("reason") or ended.get("reason") or waiting.get("reason")
    if reason:
        worker["reason"] = reason
    if ended.get("exitCode") is not None:
        worker["exitCode"] = int(ended["exitCode"])
    return worker


def worker_states(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [worker_state(index, attempts) for index, attempts in pods_by_index(pods).items()]


def _finished_at(pod: dict[str, Any]) -> str:
    ended = _trainer_state(pod).get("terminated") or {}
    # A pod without a finish time sorts last: it is not known to have failed first.
    return str(ended.get("finishedAt") or "~")


def first_failed(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The worker whose latest pod failed first. When one node dies the others' collectives fail after it,
    so the earliest failure is the cause, the later ones its consequence."""
    failed = [
        (attempts[-1], index)
        for index, attempts in pods_by_index(pods).items()
        if (attempts[-1].get("status") or {}).get("phase") == "Failed"
    ]
    if not failed:
        return None
    _, index = min(failed, key=lambda item: (_finished_at(item[0]), item[1]))
    return worker_state(index, pods_by_index(pods)[index])


def name_failed_worker(observed: Observed, pods: list[dict[str, Any]], nodes: int) -> Observed:
    """A failed run of several nodes says which node failed (index, pod, reason, exit code) before the
    Job's own message."""
    if observed.phase != RunPhase.FAILED:
        return observed
    worker = first_failed(pods)
    if worker is None:
        return observed
    details = ", ".join(
        part
        for part in (
            str(worker.get("reason") or ""),
            f"exit code {worker['exitCode']}" if "exitCode" in worker else "",
        )
        if part
    )
    said = (
        f"Node {worker['index']} of {nodes} failed (pod {worker['pod']}{': ' + details if details else ''})"
    )
    message = f"{said}; {observed.message}" if observed.message else said
    return dataclasses.replace(observed, message=message)
