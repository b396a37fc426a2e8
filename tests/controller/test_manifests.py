"""build_job and derive: pure functions, checked without any server."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest

from training_agent.controller.manifests import build_job
from training_agent.controller.status import derive, lease_lapsed
from training_agent.core.runs import RunPhase
from training_agent.core.trainingrun import TrainingRunSpec

PROJECT = UUID("6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f")
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


def spec(**overrides: Any) -> TrainingRunSpec:
    return TrainingRunSpec.model_validate({"projectId": str(PROJECT), "image": "trainer:1", **overrides})


def test_job_defaults() -> None:
    job = build_job("tr-x", "ml", spec())
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert job["metadata"] == {
        "name": "tr-x",
        "namespace": "ml",
        "labels": job["spec"]["template"]["metadata"]["labels"],
    }
    assert container["command"] == ["training-agent", "train", "--project-id", str(PROJECT), "--claimed"]
    assert container["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert {"name": "TRAINING_AGENT_DEVICE", "value": "cuda"} in container["env"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert job["spec"]["backoffLimit"] == 2 and job["spec"]["activeDeadlineSeconds"] == 86400
    assert job["spec"]["ttlSecondsAfterFinished"] == 604800
    assert "suspend" not in job["spec"]
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    assert rules[1]["action"] == "Ignore" and rules[1]["onExitCodes"]["values"] == [75]  # checkpointed stop
    assert rules[2]["action"] == "FailJob" and rules[2]["onExitCodes"]["values"] == [2, 3]
    assert pod["terminationGracePeriodSeconds"] == 120
    assert "envFrom" not in container and all(v["name"] != "gcs-key" for v in pod["volumes"])


def test_job_pass_throughs_and_kueue() -> None:
    job = build_job(
        "tr-x",
        "ml",
        spec(
            gpus=4,
            resources={"requests": {"memory": "32Gi"}, "limits": {"memory": "64Gi"}},
            nodeSelector={"gpu": "h100"},
            tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}],
            priorityClassName="training",
            runtimeClassName="nvidia",
            serviceAccountName="trainer",
            envSecretName="env",
            envConfigMapName="env-plain",
            gcsSecretName="gcs",
            queueName="team-a",
            shmSizeLimit="16Gi",
        ),
    )
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"] == {
        "requests": {"memory": "32Gi"},
        "limits": {"memory": "64Gi", "nvidia.com/gpu": "4"},
    }
    assert pod["nodeSelector"] == {"gpu": "h100"} and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert (pod["priorityClassName"], pod["runtimeClassName"], pod["serviceAccountName"]) == (
        "training",
        "nvidia",
        "trainer",
    )
    # The Secret last: its keys win over the ConfigMap's.
    assert container["envFrom"] == [{"configMapRef": {"name": "env-plain"}}, {"secretRef": {"name": "env"}}]
    assert {"name": "gcs-key", "secret": {"secretName": "gcs"}} in pod["volumes"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in pod["volumes"]
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"


def test_cpu_only_run_has_no_gpu_limit() -> None:
    container = build_job("tr-x", "ml", spec(gpus=0))["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    assert {"name": "TRAINING_AGENT_DEVICE", "value": "cpu"} in container["env"]


def cond(kind: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": "True", "reason": reason, "message": message}


def pod(
    phase: str = "Pending",
    *,
    age_s: float = 10,
    waiting: str | None = None,
    terminated: str | None = None,
    exit_code: int = 137,
    conditions: list[dict[str, Any]] | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    state: dict[str, Any] = {}
    if waiting:
        state = {"waiting": {"reason": waiting, "message": "pull access denied"}}
    if terminated:
        state = {"terminated": {"reason": terminated, "exitCode": exit_code}}
    status: dict[str, Any] = {
        "phase": phase,
        "containerStatuses": [{"name": "trainer", "state": state}],
        "conditions": conditions or [],
    }
    if reason:
        status["reason"] = reason
    created = (NOW - timedelta(seconds=age_s)).isoformat()
    return {"metadata": {"creationTimestamp": created}, "status": status}


JOB: dict[str, Any] = {"spec": {}, "status": {}}
PENDING_TIMEOUT_S = 900


def unschedulable(age_s: float, reason: str = "Unschedulable") -> dict[str, Any]:
    condition = {"type": "PodScheduled", "status": "False", "reason": reason, "message": "Insufficient gpu"}
    return pod(age_s=age_s, conditions=[condition])


CASES: dict[str, tuple[dict[str, Any] | None, list[dict[str, Any]], bool, RunPhase, str]] = {
    "no job yet": (None, [], False, RunPhase.PENDING, "JobNotCreated"),
    "job deleted": (None, [], True, RunPhase.FAILED, "JobDeleted"),
    "job without pods": (JOB, [], False, RunPhase.PENDING, "Pending"),
    "suspended (kueue)": ({"spec": {"suspend": True}, "status": {}}, [], False, RunPhase.QUEUED, "Suspended"),
    "unschedulable": (
        JOB,
        [
            pod(
                conditions=[
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "Insufficient nvidia.com/gpu",
                    }
                ]
            )
        ],
        False,
        RunPhase.QUEUED,
        "Unschedulable",
    ),
    "unschedulable past the pending timeout": (
        JOB,
        [unschedulable(age_s=PENDING_TIMEOUT_S + 1)],
        False,
        RunPhase.FAILED,
        "Unschedulable",
    ),
    "scheduling gated past the pending timeout (a queue, not a fault)": (
        JOB,
        [unschedulable(age_s=PENDING_TIMEOUT_S * 10, reason="SchedulingGated")],
        False,
        RunPhase.QUEUED,
        "SchedulingGated",
    ),
    "suspended (kueue) with an old unschedulable pod": (
        {"spec": {"suspend": True}, "status": {}},
        [unschedulable(age_s=PENDING_TIMEOUT_S * 10)],
        False,
        RunPhase.QUEUED,
        "Suspended",
    ),
    "image pull, in grace": (
        JOB,
        [pod(waiting="ImagePullBackOff", age_s=10)],
        False,
        RunPhase.PENDING,
        "ImagePullBackOff",
    ),
    "image pull, past grace": (
        JOB,
        [pod(waiting="ErrImagePull", age_s=900)],
        False,
        RunPhase.FAILED,
        "ImagePullBackOff",
    ),
    "running": (JOB, [pod("Running")], False, RunPhase.RUNNING, "Running"),
    "active without pod seen": (
        {"spec": {}, "status": {"active": 1}},
        [],
        False,
        RunPhase.RUNNING,
        "Running",
    ),
    "complete": (
        {"spec": {}, "status": {"conditions": [cond("Complete")]}},
        [],
        False,
        RunPhase.SUCCEEDED,
        "Completed",
    ),
    "backoff limit": (
        {"spec": {}, "status": {"conditions": [cond("Failed", "BackoffLimitExceeded")]}},
        [pod("Failed", terminated="Error")],
        False,
        RunPhase.FAILED,
        "BackoffLimitExceeded",
    ),
    "oom killed": (
        {"spec": {}, "status": {"conditions": [cond("Failed", "BackoffLimitExceeded")]}},
        [pod("Failed", terminated="OOMKilled")],
        False,
        RunPhase.FAILED,
        "OOMKilled",
    ),
    "deadline": (
        {"spec": {}, "status": {"conditions": [cond("Failed", "DeadlineExceeded")]}},
        [],
        False,
        RunPhase.FAILED,
        "DeadlineExceeded",
    ),
    "pod failure policy": (
        {"spec": {}, "status": {"conditions": [cond("Failed", "PodFailurePolicy")]}},
        [],
        False,
        RunPhase.FAILED,
        "PodFailurePolicy",
    ),
    "failure target (1.31+)": (
        {"spec": {}, "status": {"conditions": [cond("FailureTarget", "PodFailurePolicy")]}},
        [],
        False,
        RunPhase.FAILED,
        "PodFailurePolicy",
    ),
    "evicted": (
        {"spec": {}, "status": {"conditions": [cond("Failed", "BackoffLimitExceeded")]}},
        [pod("Failed", reason="Evicted")],
        False,
        RunPhase.FAILED,
        "Evicted",
    ),
    "stopped for a retry (checkpoint saved)": (
        {"spec": {}, "status": {"failed": 1}},
        [pod("Failed", terminated="Error", exit_code=75)],
        False,
        RunPhase.PENDING,
        "Retrying",
    ),
    "evicted, retrying": (
        {"spec": {}, "status": {"active": 1}},
        [pod("Running")],
        False,
        RunPhase.RUNNING,
        "Running",
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=lambda c: c.replace(" ", "-"))
def test_derive(case: str) -> None:
    job, pods, existed, phase, reason = CASES[case]
    observed = derive(
        job,
        pods,
        now=NOW,
        image_pull_grace_s=300,
        pending_timeout_s=PENDING_TIMEOUT_S,
        job_was_created=existed,
    )
    assert (observed.phase, observed.reason) == (phase, reason)


def test_unschedulable_failure_keeps_the_schedulers_message() -> None:
    observed = derive(
        JOB, [unschedulable(age_s=1000)], now=NOW, image_pull_grace_s=300, pending_timeout_s=900
    )
    assert observed.message.startswith("Insufficient gpu")
    assert "900 s" in observed.message
    # Without a timeout an unschedulable pod queues for ever.
    forever = derive(JOB, [unschedulable(age_s=10**6)], now=NOW, image_pull_grace_s=300)
    assert forever.phase == RunPhase.QUEUED


def running_pod(started_s_ago: float) -> dict[str, Any]:
    state = {"running": {"startedAt": (NOW - timedelta(seconds=started_s_ago)).isoformat()}}
    return {"status": {"phase": "Running", "containerStatuses": [{"name": "trainer", "state": state}]}}


def beat(seconds_ago: float | None) -> dict[str, Any]:
    record: dict[str, Any] = {"run_id": "a" * 32, "accepted_at": (NOW - timedelta(hours=1)).isoformat()}
    if seconds_ago is not None:
        record["heartbeat_at"] = (NOW - timedelta(seconds=seconds_ago)).isoformat()
    return record


LEASES: dict[str, tuple[dict[str, Any], list[dict[str, Any]], bool]] = {
    "fresh heartbeat": (beat(5), [running_pod(3600)], False),
    "stale heartbeat": (beat(61), [running_pod(3600)], True),
    "never beat (the pod is starting)": (beat(None), [running_pod(3600)], False),
    "stale beat of a preempted pod, its successor just started": (beat(600), [running_pod(10)], False),
    "stale beat, the successor started a lease ago and never beat": (beat(600), [running_pod(61)], True),
    "stale heartbeat, no pod seen": (beat(61), [], True),
}


@pytest.mark.parametrize("case", list(LEASES), ids=lambda c: c.replace(" ", "-"))
def test_lease_lapsed(case: str) -> None:
    record, pods, lapsed = LEASES[case]
    assert lease_lapsed(record, pods, now=NOW, lease_s=60) is lapsed
