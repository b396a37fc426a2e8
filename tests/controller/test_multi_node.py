"""A run of two nodes end to end against kmock: the headless Service and the Indexed Job are made, the pods of
both indexes show in status.workers, the failure of index 1 fails the run naming that node, the Job's success
ends it Succeeded, cancelling deletes the Service too; and the same run as a JobSet. kmock has no Job or
JobSet controller: the tests play the cluster by creating pods and PATCHing statuses."""

from __future__ import annotations

import asyncio
from typing import Any

import kmock
import pytest
from kubernetes import client

from tests.controller.conftest import NAMESPACE, create_run, eventually, job, job_gone, training_project
from tests.controller.test_operator import RUNS, failed_condition, patch_job_status, run_status
from training_agent.controller.distributed import JOBSET_GROUP, JOBSET_VERSION, JOBSETS
from training_agent.core.kube import TrainingRuns
from training_agent.core.records import Project, RecordsStore
from training_agent.core.settings import Settings

SERVICES = "v1/services"
JOBSET_RESOURCE = f"{JOBSET_GROUP}/{JOBSET_VERSION}/{JOBSETS}"


@pytest.fixture
def workload() -> str:
    return "job"


@pytest.fixture
def k8s_settings(k8s_settings: Settings, workload: str) -> Settings:
    return k8s_settings.model_copy(
        update={"trainer_nodes": 2, "trainer_gpus": 2, "trainer_workload": workload}
    )


def stored(cluster: kmock.KubernetesEmulator, resource: str, name: str) -> dict[str, Any]:
    return dict(cluster.objects[resource, NAMESPACE, name])


def gone(cluster: kmock.KubernetesEmulator, resource: str, name: str) -> bool:
    try:
        return bool(cluster.objects[resource, NAMESPACE, name].deleted)
    except KeyError:
        return True


async def node_pod(k8s_api: client.ApiClient, run: str, index: int, status: dict[str, Any]) -> str:
    """A pod of completion index `index`, as the Job controller would make it, with the kubelet's status."""
    core = client.CoreV1Api(k8s_api)
    name = f"{run}-{index}-abcde"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {
                "automl.dev/training-run": run,
                "batch.kubernetes.io/job-completion-index": str(index),
            },
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
        },
        "spec": {"containers": [{"name": "trainer", "image": "registry.example/trainer:1.0"}]},
    }
    await asyncio.to_thread(core.create_namespaced_pod, NAMESPACE, pod)  # type: ignore[arg-type]
    await asyncio.to_thread(core.patch_namespaced_pod_status, name, NAMESPACE, {"status": status})
    return name


def workers(cluster: kmock.KubernetesEmulator, name: str) -> list[dict[str, Any]]:
    return list(run_status(cluster, name).get("workers") or [])


@pytest.fixture
async def two_node_run(
    cluster: kmock.KubernetesEmulator,
    controller: Any,
    k8s_api: client.ApiClient,
    k8s_settings: Settings,
    k8s_records: RecordsStore,
) -> tuple[Project, str]:
    """A controller, a project in `training`, its two-node run with both pods running."""
    await controller()
    project = training_project(k8s_records)
    name = await create_run(k8s_api, k8s_settings, project)
    created = await eventually(lambda: job(cluster, name), what="the Job")
    service = stored(cluster, SERVICES, name)
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert [o["name"] for o in service["metadata"]["ownerReferences"]] == [name]  # deleted with the run
    assert created["spec"]["completionMode"] == "Indexed" and created["spec"]["parallelism"] == 2
    assert created["spec"]["template"]["spec"]["subdomain"] == name
    command = created["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:6] == ["training-agent", "torchrun", "--nnodes", "2", "--nproc-per-node", "2"]
    for index in (0, 1):
        await node_pod(k8s_api, name, index, {"phase": "Running"})
    await patch_job_status(k8s_api, name, {"active": 2})
    await eventually(lambda: run_status(cluster, name).get("phase") == "Running", what="Running")
    await eventually(
        lambda: (
            [(w["index"], w["phase"]) for w in workers(cluster, name)] == [(0, "Running"), (1, "Running")]
        ),
        what="both workers in the status",
    )
    return project, name


async def test_failure_of_index_one_fails_the_run_naming_it(
    cluster: kmock.KubernetesEmulator,
    k8s_api: client.ApiClient,
    k8s_records: RecordsStore,
    two_node_run: tuple[Project, str],
) -> None:
    project, name = two_node_run
    core = client.CoreV1Api(k8s_api)
    ended = {"terminated": {"reason": "OOMKilled", "exitCode": 137, "finishedAt": "2026-11-22T12:00:00Z"}}
    trainer = {
        "name": "trainer",
        "image": "x",
        "imageID": "",
        "ready": False,
        "restartCount": 0,
        "state": ended,
    }
    failed = {"phase": "Failed", "containerStatuses": [trainer]}
    await asyncio.to_thread(
        core.patch_namespaced_pod_status, f"{name}-1-abcde", NAMESPACE, {"status": failed}
    )
    await patch_job_status(
        k8s_api, name, failed_condition("BackoffLimitExceeded", "Job has reached the limit")
    )
    status = await eventually(
        lambda: run_status(cluster, name).get("phase") == "Failed" and run_status(cluster, name),
        what="Failed",
    )
    assert status["reason"] == "OOMKilled"  # the pod's own reason, as for one node
    assert status["message"].startswith(f"Node 1 of 2 failed (pod {name}-1-abcde: OOMKilled, exit code 137)")
    assert {w["index"]: w["phase"] for w in status["workers"]} == {0: "Running", 1: "Failed"}
    project_now = await eventually(
        lambda: (p := k8s_records.get_project(project.id)) and p.status == "failed" and p,
        what="project failed",
    )
    assert "Node 1 of 2 failed" in project_now.metadata["error"]["message"]


async def test_success_of_the_job_succeeds_the_run(
    cluster: kmock.KubernetesEmulator,
    k8s_api: client.ApiClient,
    two_node_run: tuple[Project, str],
) -> None:
    _, name = two_node_run
    # Kubernetes 1.31+ with successPolicy: index 0 succeeded, SuccessCriteriaMet, then Complete.
    conditions = [{"type": "SuccessCriteriaMet", "status": "True", "reason": "SuccessPolicy"}]
    await patch_job_status(k8s_api, name, {"active": 0, "succeeded": 1, "conditions": conditions})
    await eventually(lambda: run_status(cluster, name).get("phase") == "Succeeded", what="Succeeded")


async def test_cancelling_deletes_the_job_and_the_service(
    cluster: kmock.KubernetesEmulator,
    k8s_api: client.ApiClient,
    two_node_run: tuple[Project, str],
) -> None:
    _, name = two_node_run
    await eventually(
        lambda: cluster.objects[RUNS, NAMESPACE, name]["metadata"].get("finalizers"), what="finalizer"
    )
    await asyncio.to_thread(TrainingRuns(k8s_api, NAMESPACE).delete, name)
    await eventually(lambda: job_gone(cluster, name), what="the Job deleted")
    await eventually(lambda: gone(cluster, SERVICES, name), what="the Service deleted")


@pytest.fixture
def jobset_cluster(cluster: kmock.KubernetesEmulator) -> kmock.KubernetesEmulator:
    """The cluster with JobSet installed: its resource served in discovery, as the JobSet CRD would."""
    cluster.resources[JOBSET_RESOURCE] = {
        "kind": "JobSet",
        "singular": "jobset",
        "namespaced": True,
        "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        "subresources": ["status"],
    }  # type: ignore[assignment]
    return cluster


@pytest.mark.parametrize("workload", ["jobset"])
async def test_jobset_run(
    jobset_cluster: kmock.KubernetesEmulator,
    controller: Any,
    k8s_api: client.ApiClient,
    k8s_settings: Settings,
    k8s_records: RecordsStore,
) -> None:
    await controller()
    project = training_project(k8s_records)
    name = await create_run(k8s_api, k8s_settings, project)
    jobset = await eventually(lambda: stored(jobset_cluster, JOBSET_RESOURCE, name), what="the JobSet")
    assert jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["completions"] == 2
    assert gone(jobset_cluster, SERVICES, name)  # JobSet makes its own Service
    assert gone(jobset_cluster, "batch/v1/jobs", name)
    for index in (0, 1):
        await node_pod(k8s_api, name, index, {"phase": "Running"})
    await eventually(lambda: run_status(jobset_cluster, name).get("phase") == "Running", what="Running")
    custom = client.CustomObjectsApi(k8s_api)
    done = {"status": {"conditions": [{"type": "Completed", "status": "True", "reason": "AllJobsCompleted"}]}}
    await asyncio.to_thread(
        custom.patch_namespaced_custom_object_status,
        JOBSET_GROUP,
        JOBSET_VERSION,
        NAMESPACE,
        JOBSETS,
        name,
        done,
    )
    await eventually(lambda: run_status(jobset_cluster, name).get("phase") == "Succeeded", what="Succeeded")
    assert len(workers(jobset_cluster, name)) == 2
