"""Job and Pod state → the run's phase, in one pure function (the table of cases is in the tests), and
whether a running trainer's lease has lapsed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from training_agent.controller.distributed import COMPLETION_INDEX
from training_agent.core.errors import EXIT_RETRY
from training_agent.core.lease import lease_expired
from training_agent.core.runs import RunPhase

_IMAGE_PULL_REASONS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"})
TERMINAL = frozenset({RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.CANCELLED})
# Endings the trainer itself could not write into the records.
UNREPORTED_BY_TRAINER = frozenset(
    {
        "OOMKilled",
        "ImagePullBackOff",
        "DeadlineExceeded",
        "Evicted",
        "BackoffLimitExceeded",
        "JobDeleted",
        "Cancelled",
        "PodFailurePolicy",
        "Unschedulable",
        # A JobSet's own reasons: one of its Jobs failed, or it ran out of restarts.
        "FailedJobs",
        "ReachedMaxRestarts",
    }
)
# Endings where the Job would otherwise wait (or hang) for good: the controller deletes it, which also frees
# what its pod holds (a node's GPU, a place in the quota).
DELETE_JOB = frozenset({"ImagePullBackOff", "Unschedulable", "LeaseExpired"})


@dataclass(frozen=True)
class Observed:
    phase: RunPhase
    reason: str
    message: str = ""

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return dict(condition)
    return None


def _container_states(pod: dict[str, Any]) -> list[dict[str, Any]]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return [s for s in statuses if isinstance(s, dict)]


def _terminated_reasons(pods: list[dict[str, Any]]) -> set[str]:
    reasons = set()
    for pod in pods:
        for status in _container_states(pod):
            for key in ("state", "lastState"):
                terminated = (status.get(key) or {}).get("terminated") or {}
                if terminated.get("reason"):
                    reasons.add(terminated["reason"])
        if (pod.get("status") or {}).get("reason") == "Evicted":
            reasons.add("Evicted")
    return reasons


def _created(pod: dict[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("creationTimestamp") or "")


def _newest(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(pods, key=_created) if pods else None


def completion_index(pod: dict[str, Any]) -> int | None:
    """The pod's Job completion index (an annotation, and a label since Kubernetes 1.28); None for a pod
    of a plain Job."""
    meta = pod.get("metadata") or {}
    for where in ("labels", "annotations"):
        value = (meta.get(where) or {}).get(COMPLETION_INDEX)
        if value is not None and str(value).isdigit():
            return int(value)
    return None


def _latest_per_index(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest pod of each completion index (a run of several nodes), or the newest pod (one node)."""
    latest: dict[int | None, dict[str, Any]] = {}
    for pod in sorted(pods, key=_created):
        latest[completion_index(pod)] = pod
    return list(latest.values())


def _failed(job: dict[str, Any], pods: list[dict[str, Any]]) -> Observed | None:
    condition = _condition(job, "Failed") or _condition(job, "FailureTarget")
    if condition is None:
        return None
    reasons = _terminated_reasons(pods)
    # The pod's own reason is more telling than the Job's "BackoffLimitExceeded".
    for specific in ("OOMKilled", "Evicted"):
        if specific in reasons:
            return Observed(RunPhase.FAILED, specific, condition.get("message") or specific)
    return Observed(RunPhase.FAILED, condition.get("reason") or "Failed", condition.get("message") or "")


def _stopped_for_retry(pod: dict[str, Any]) -> bool:
    """The trainer exited with EXIT_RETRY: it checkpointed on SIGTERM and the Job will start another pod."""
    for status in _container_states(pod):
        terminated = (status.get("state") or {}).get("terminated") or {}
        if terminated.get("exitCode") == EXIT_RETRY:
            return True
    return False


def _age_s(pod: dict[str, Any], now: datetime) -> float | None:
    created = _parse_time((pod.get("metadata") or {}).get("creationTimestamp"))
    return None if created is None else (now - created).total_seconds()


def _waiting(
    pod: dict[str, Any], now: datetime, image_pull_grace_s: float, pending_timeout_s: float | None
) -> Observed | None:
    age = _age_s(pod, now)
    for status in _container_states(pod):
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _IMAGE_PULL_REASONS:
            message = f"{waiting['reason']}: {waiting.get('message') or status.get('image') or ''}".strip()
            if age is not None and age > image_pull_grace_s:
                return Observed(RunPhase.FAILED, "ImagePullBackOff", message)
            return Observed(RunPhase.PENDING, "ImagePullBackOff", message)
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            reason = condition.get("reason") or "Unschedulable"
            message = condition.get("message") or ""
            # Only the scheduler's "no node fits" is a fault; a scheduling gate (Kueue's topology-aware
            # scheduling, for one) is a queue, and waits as long as it takes.
            if (
                reason == "Unschedulable"
                and pending_timeout_s is not None
                and age is not None
                and age > pending_timeout_s
            ):
                return Observed(
                    RunPhase.FAILED,
                    reason,
                    f"{message} (the trainer pod was unschedulable for more than {pending_timeout_s:g} s)",
                )
            return Observed(RunPhase.QUEUED, reason, message)
    return None


def derive(  # noqa: PLR0911 - one return per row of the phase table
    job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    *,
    now: datetime,
    image_pull_grace_s: float,
    pending_timeout_s: float | None = None,
    job_was_created: bool = False,
) -> Observed:
    """The run's phase from its Job and the Job's Pods. `pending_timeout_s`: how long a pod may stay
    unschedulable before the run fails (None: for ever); a Job suspended by Kueue is queued, never timed
    out. `job_was_created`: the run's status says a Job existed, so a missing one was deleted by someone."""
    if job is None:
        if job_was_created:
            return Observed(RunPhase.FAILED, "JobDeleted", "The run's Job was deleted before it finished")
        return Observed(RunPhase.PENDING, "JobNotCreated", "Waiting for the controller to create the Job")
    if _condition(job, "Complete") or _condition(job, "SuccessCriteriaMet"):
        return Observed(RunPhase.SUCCEEDED, "Completed", "The trainer finished")
    failed = _failed(job, pods)
    if failed is not None:
        return failed
    if (job.get("spec") or {}).get("suspend"):
        return Observed(RunPhase.QUEUED, "Suspended", "Waiting for the queue (Kueue) to admit the Job")
    # One node: its newest pod. Several: every node's newest pod, and any one waiting holds the run back.
    latest = _latest_per_index(pods)
    for pod in latest:
        waiting = _waiting(pod, now, image_pull_grace_s, pending_timeout_s)
        if waiting is not None:
            return waiting
    if any((pod.get("status") or {}).get("phase") == "Running" for pod in latest):
        return Observed(RunPhase.RUNNING, "Running", "The trainer is running")
    if any(_stopped_for_retry(pod) for pod in latest):
        return Observed(
            RunPhase.PENDING,
            "Retrying",
            "The trainer was stopped and saved a checkpoint; a new pod resumes it",
        )
    if ((job.get("status") or {}).get("active") or 0) > 0:
        return Observed(RunPhase.RUNNING, "Running", "The trainer is running")
    return Observed(RunPhase.PENDING, "Pending", "Waiting for the trainer pod to start")


def _running_since(pod: dict[str, Any]) -> datetime | None:
    """When the pod's trainer container started (its image pulled): from then on it can renew its lease."""
    for status in _container_states(pod):
        started = _parse_time(((status.get("state") or {}).get("running") or {}).get("startedAt"))
        if started is not None:
            return started
    return _parse_time((pod.get("status") or {}).get("startTime"))


def lease_lapsed(
    record: dict[str, Any], pods: list[dict[str, Any]], *, now: datetime, lease_s: float
) -> bool:
    """Whether the running trainer stopped renewing its lease (the run record's `heartbeat_at`).

    The lease counts from the last heartbeat, or from when the current pod's trainer started if that is
    later: a pod that replaces a preempted one gets a whole lease to send its first beat, although the
    record still holds the last beat of its predecessor. A run that never beat is not judged here (its
    first pod is still starting)."""
    if not lease_expired(record, lease_s=lease_s, now=now):
        return False
    pod = _newest(pods)
    started = _running_since(pod) if pod is not None else None
    return started is None or (now - started).total_seconds() > lease_s
