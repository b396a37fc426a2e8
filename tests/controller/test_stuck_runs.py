"""Nothing stays stuck on Kubernetes (kmock): a pod that can never be scheduled fails its run after the
pending timeout, a Job suspended by Kueue queues for as long as it takes, and a run whose trainer stopped
renewing its lease is reaped — project failed, Job deleted, checkpoints removed."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID

import kmock
import pytest
from kubernetes import client

from tests.controller.conftest import NAMESPACE, eventually, job_gone
from tests.controller.test_operator import event_posted, jobs_created, patch_job_status, run_status
from training_agent.core.lease import RUN_KEY, lease_message, new_run
from training_agent.core.records import Project, RecordsStore
from training_agent.core.settings import Settings
from training_agent.core.storage import ObjectStorage
from training_agent.core.sweep import checkpoint_prefix

SCHEDULER_MESSAGE = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."


def _ago(seconds: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def make_pod(k8s_api: client.ApiClient, run: str, status: dict[str, Any], *, age_s: float) -> None:
    """A trainer pod of `run` created `age_s` ago, in `status` (kmock has no kubelet: the test plays it).
    Play the Job's status before: the controller may delete the Job as soon as it sees this pod, and kmock,
    unlike an API server, brings a deleted object back when it is patched."""
    core = client.CoreV1Api(k8s_api)
    name = f"{run}-xyz12"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {"automl.dev/training-run": run, "job-name": run},
            "creationTimestamp": _ago(age_s),
        },
        "spec": {"containers": [{"name": "trainer", "image": "registry.example/trainer:1.0"}]},
    }
    await asyncio.to_thread(core.create_namespaced_pod, NAMESPACE, pod)  # type: ignore[arg-type]
    await asyncio.to_thread(core.patch_namespaced_pod_status, name, NAMESPACE, {"status": status})


def unschedulable() -> dict[str, Any]:
    condition = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": SCHEDULER_MESSAGE,
    }
    return {"phase": "Pending", "conditions": [condition]}


def running(started_s_ago: float) -> dict[str, Any]:
    return {
        "phase": "Running",
        "containerStatuses": [
            {
                "name": "trainer",
                "image": "registry.example/trainer:1.0",
                "imageID": "",
                "ready": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": _ago(started_s_ago)}},
            }
        ],
    }


def failed_status(cluster: kmock.KubernetesEmulator, name: str) -> dict[str, Any] | None:
    status = run_status(cluster, name)
    return status if status.get("phase") == "Failed" else None


def failed_project(records: RecordsStore, project: Project) -> Project | None:
    stored = records.get_project(project.id)
    return stored if stored is not None and stored.status == "failed" else None


# -- pending timeout -----------------------------------------------------------------------------------------
async def test_unschedulable_past_the_pending_timeout_fails_the_run(
    cluster: kmock.KubernetesEmulator,
    k8s_api: client.ApiClient,
    k8s_settings: Settings,
    k8s_records: RecordsStore,
    started_run: tuple[Project, str],
) -> None:
    project, name = started_run
    await patch_job_status(k8s_api, name, {"active": 1})
    await make_pod(k8s_api, name, unschedulable(), age_s=k8s_settings.trainer_pending_timeout_seconds + 60)
    status = await eventually(
        lambda: run_status(cluster, name).get("phase") == "Failed" and run_status(cluster, name),
        what="Failed",
    )
    assert status["reason"] == "Unschedulable"
    assert status["message"].startswith(SCHEDULER_MESSAGE)
    stored = await eventually(lambda: failed_project(k8s_records, project), what="the project failed")
    assert stored.metadata["error"]["message"].startswith(f"Unschedulable: {SCHEDULER_MESSAGE}")
    assert stored.metadata["error"]["step"] == "kubernetes"
    await eventually(lambda: job_gone(cluster, name), what="the Job deleted")
    await eventually(
        lambda: [log.log_level for log in k8s_records.recent_logs(project.id)] == ["error"], what="the log"
    )
    await event_posted(cluster, name, "Unschedulable")


async def test_a_young_unschedulable_pod_and_a_suspended_job_stay_queued(
    cluster: kmock.KubernetesEmulator,
    k8s_api: client.ApiClient,
    k8s_records: RecordsStore,
    started_run: tuple[Project, str],
) -> None:
    """Queue time is not a fault: Kueue's suspension never times out, whatever the pods' age."""
    project, name = started_run
    await patch_job_status(k8s_api, name, {"active": 1})
    await make_pod(k8s_api, name, unschedulable(), age_s=30)
    await eventually(lambda: run_status(cluster, name).get("reason") == "Unschedulable", what="Queued")
    batch = client.BatchV1Api(k8s_api)
    await asyncio.to_thread(batch.patch_namespaced_job, name, NAMESPACE, {"spec": {"suspend": True}})
    # The pod is older than any timeout now; a suspended Job is queued all the same.
    core = client.CoreV1Api(k8s_api)
    old = {"metadata": {"creationTimestamp": _ago(10**6)}}
    await asyncio.to_thread(core.patch_namespaced_pod, f"{name}-xyz12", NAMESPACE, old)
    await eventually(lambda: run_status(cluster, name).get("reason") == "Suspended", what="Suspended")
    await asyncio.sleep(1.5)  # three resyncs
    assert run_status(cluster, name)["phase"] == "Queued"
    assert k8s_records.get_project(project.id).status == "training"  # type: ignore[union-attr]
    assert not job_gone(cluster, name)


# -- leases --------------------------------------------------------------------------------------------------
def with_run_record(records: RecordsStore, project: Project, **fields: Any) -> dict[str, Any]:
    record = {**new_run(project.id, "kubernetes"), **fields}
    records.transition_project(
        project.id, from_status="training", to_status="training", metadata_patch={RUN_KEY: record}
    )
    return record


def put_checkpoint(storage: ObjectStorage, tmp_path: Path, project_id: UUID, run_id: str) -> str:
    src = tmp_path / f"ckpt-{run_id}.pt"
    src.write_bytes(b"weights")
    url = storage.model_url(checkpoint_prefix(project_id, run_id) + "last.pt")
    storage.upload(src, url)
    return url


async def test_an_expired_lease_is_reaped(
    cluster: kmock.KubernetesEmulator,
    controller: Any,
    k8s_api: client.ApiClient,
    k8s_settings: Settings,
    k8s_records: RecordsStore,
    started_run: tuple[Project, str],
    tmp_path: Path,
) -> None:
    project, name = started_run
    record = with_run_record(k8s_records, project, heartbeat_at=_ago(600))
    storage = ObjectStorage(k8s_settings)
    own = put_checkpoint(storage, tmp_path, project.id, record["run_id"])
    another_run = put_checkpoint(storage, tmp_path, project.id, "b" * 32)
    await patch_job_status(k8s_api, name, {"active": 1})
    await make_pod(k8s_api, name, running(started_s_ago=3600), age_s=3600)

    status = await eventually(
        lambda: run_status(cluster, name).get("phase") == "Failed" and run_status(cluster, name),
        what="Failed",
    )
    assert status["reason"] == "LeaseExpired"
    assert status["message"] == lease_message(record)
    stored = await eventually(lambda: failed_project(k8s_records, project), what="the project failed")
    assert stored.metadata["error"]["message"] == lease_message(record)
    assert "last heartbeat" in stored.metadata["error"]["message"]
    assert [log.message for log in k8s_records.recent_logs(project.id)] == [
        f"Training failed for project {project.name}: {lease_message(record)}"
    ]
    await asyncio.sleep(1)
    await eventually(lambda: job_gone(cluster, name), what="the Job deleted")
    assert not storage.exists(own)
    assert storage.exists(another_run)  # only the reaped run's own checkpoints
    await event_posted(cluster, name, "LeaseExpired")
    # A restarted controller resumes the run: the Job deleted on purpose is never made again.
    await controller()
    await asyncio.sleep(1.0)
    assert job_gone(cluster, name) and jobs_created(cluster) == 1


@pytest.mark.parametrize("heartbeat_s_ago", [2, None], ids=["fresh-heartbeat", "no-heartbeat-yet"])
async def test_a_live_or_starting_trainer_is_not_reaped(
    cluster: kmock.KubernetesEmulator,
    k8s_api: client.ApiClient,
    k8s_records: RecordsStore,
    started_run: tuple[Project, str],
    heartbeat_s_ago: float | None,
) -> None:
    project, name = started_run
    fields = {} if heartbeat_s_ago is None else {"heartbeat_at": _ago(heartbeat_s_ago)}
    with_run_record(k8s_records, project, **fields)
    await patch_job_status(k8s_api, name, {"active": 1})
    await make_pod(k8s_api, name, running(started_s_ago=3600), age_s=3600)
    await eventually(lambda: run_status(cluster, name).get("phase") == "Running", what="Running")
    await asyncio.sleep(1.5)  # three resyncs
    assert run_status(cluster, name)["phase"] == "Running"
    assert k8s_records.get_project(project.id).status == "training"  # type: ignore[union-attr]
    assert not job_gone(cluster, name)


async def test_a_reaping_left_half_done_is_finished(
    cluster: kmock.KubernetesEmulator,
    k8s_api: client.ApiClient,
    k8s_records: RecordsStore,
    started_run: tuple[Project, str],
) -> None:
    """A controller failed the project by the lease and stopped before it deleted the Job: the next one
    deletes it and marks the run, without failing the project twice."""
    project, name = started_run
    record = with_run_record(k8s_records, project, heartbeat_at=_ago(600))
    k8s_records.transition_project(
        project.id,
        from_status="training",
        to_status="failed",
        metadata_patch={"error": {"message": lease_message(record), "type": "LeaseExpired"}},
    )
    await patch_job_status(k8s_api, name, {"active": 1})
    await make_pod(k8s_api, name, running(started_s_ago=3600), age_s=3600)
    status = await eventually(
        lambda: run_status(cluster, name).get("phase") == "Failed" and run_status(cluster, name),
        what="Failed",
    )
    assert (status["reason"], status["message"]) == ("LeaseExpired", lease_message(record))
    await eventually(lambda: job_gone(cluster, name), what="the Job deleted")
    assert k8s_records.recent_logs(project.id) == []
