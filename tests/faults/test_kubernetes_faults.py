"""Faults on the Kubernetes path, against kmock: the API (kubernetes executor) creates the TrainingRun, the
controller its Job, and the test plays the cluster — the pods are real `training-agent train --claimed`
processes on the World's embedded records and local bucket, killed at a step by tests/faults/hooks, and
the Job and Pod status is patched the way the Job controller and the kubelet would report them.

A pod's work folder is an emptyDir that goes with the pod, so each trainer here gets a folder of its own
outside the World's work dir; the World's checks then cover what outlives a pod (records, bucket objects).

Also the control plane killed mid-start: the API SIGKILLed between the claim and the TrainingRun's creation
(the next API fails the run), and the controller stopped between the Job's creation and its status patch
(the next controller makes no second Job).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import kmock
import pytest
from fastapi.testclient import TestClient
from kubernetes import client

from tests.conftest import make_settings
from tests.controller.conftest import JOBS, NAMESPACE, eventually, job_gone
from tests.controller.test_operator import (
    RUNS,
    failed_condition,
    jobs_created,
    jobs_stored,
    patch_job_status,
    run_status,
)
from tests.faults.conftest import World, everything_under
from tests.faults.test_server_faults import FAST_TRAINER, Serve
from tests.support.kube import ClusterEmulator, OperatorThread, register_crd, write_kubeconfig
from training_agent.api.executors.kubernetes import UNSUBMITTED_MESSAGE, KubernetesExecutor
from training_agent.api.main import create_app
from training_agent.controller.reconcile import Reconciler
from training_agent.core.errors import EXIT_OK, EXIT_RETRY
from training_agent.core.kube import api_client
from training_agent.core.records import Project
from training_agent.core.settings import Settings

pytestmark = pytest.mark.faults

IMAGE = "registry.example/trainer:1.0"
BACKOFF_MESSAGE = "Job has reached the specified backoff limit"
# The controller's lease (the default): far longer than a trainer takes to start and send its first beat
# here (torch's import on a busy 2-core machine), so no case here is reaped by a lease by accident (the
# controller's lease reaping is tests/controller/test_stuck_runs.py's).
CONTROLLER_LEASE_S = 60.0


@pytest.fixture
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    return {**kmock_options, "cls": ClusterEmulator}


@pytest.fixture
async def cluster(kmock: kmock.KubernetesEmulator) -> kmock.KubernetesEmulator:
    register_crd(kmock)
    return kmock


@pytest.fixture
def kubeconfig(world: World, cluster: kmock.KubernetesEmulator) -> Path:
    return write_kubeconfig(world.tmp / "kubeconfig", str(cluster.url).rstrip("/"), NAMESPACE)


def k8s_settings(world: World, kubeconfig: Path) -> Settings:
    """The control plane's settings: the World's records and bucket, the kmock cluster."""
    return make_settings(
        world.tmp,
        kubeconfig=kubeconfig,
        namespace=NAMESPACE,
        executor="kubernetes",
        trainer_image=IMAGE,
        controller_resync_seconds=0.5,
        run_lease_seconds=CONTROLLER_LEASE_S,
    )


@pytest.fixture
async def control_plane(
    world: World, kubeconfig: Path
) -> AsyncIterator[Callable[[], Awaitable[tuple[TestClient, Settings]]]]:
    """Start the API (TestClient, kubernetes executor) and a controller; both stopped at the end."""
    clients: list[TestClient] = []
    operators: list[OperatorThread] = []

    async def start() -> tuple[TestClient, Settings]:
        settings = k8s_settings(world, kubeconfig)
        operators.append(OperatorThread(settings, world.records, api_client(settings), NAMESPACE))
        api = TestClient(create_app(settings, records=world.records), raise_server_exceptions=False)
        await asyncio.to_thread(api.__enter__)
        clients.append(api)
        await asyncio.sleep(0.5)  # the operator logs in and starts its watches
        return api, settings

    yield start
    for api in clients:
        await asyncio.to_thread(api.__exit__, None, None, None)
    for op in operators:
        await asyncio.to_thread(op.stop)  # keep this loop (kmock's) free while kopf winds down


# -- playing the cluster ---------------------------------------------------------------------------------
def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def container(state: dict[str, Any]) -> dict[str, Any]:
    return {"name": "trainer", "image": IMAGE, "imageID": "", "ready": "running" in state, "restartCount": 0}


async def put_pod(k8s_api: client.ApiClient, run: str, number: int, status: dict[str, Any]) -> None:
    """Pod `number` of the run's Job, created when it starts Running (so a later pod has a later
    creationTimestamp, which is how the controller finds the current one) or given a new status."""
    core = client.CoreV1Api(k8s_api)
    name = f"{run}-pod{number}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {"automl.dev/training-run": run, "job-name": run},
        },
        "spec": {"containers": [{"name": "trainer", "image": IMAGE}]},
    }
    if status.get("phase") == "Running":
        await asyncio.to_thread(core.create_namespaced_pod, NAMESPACE, pod)  # type: ignore[arg-type]
    await asyncio.to_thread(core.patch_namespaced_pod_status, name, NAMESPACE, {"status": status})


def running_status() -> dict[str, Any]:
    state = {"running": {"startedAt": _stamp(datetime.now(timezone.utc))}}
    return {"phase": "Running", "containerStatuses": [{**container(state), "state": state}]}


def terminated_status(exit_code: int) -> dict[str, Any]:
    reason = "Completed" if exit_code == 0 else "Error"
    state = {"terminated": {"exitCode": exit_code, "reason": reason}}
    phase = "Succeeded" if exit_code == 0 else "Failed"
    return {"phase": phase, "containerStatuses": [{**container(state), "state": state}]}


def run_pod(world: World, project: Project, pod: str, *, fault: str = "", sig: str = "KILL") -> int:
    """The pod's container: `training-agent train --claimed` on the World's stores, its work dir the pod's
    own emptyDir. Returns its exit status (negative: killed)."""
    work_dir = str(world.tmp / "pods" / pod)
    return world.train(
        project, claimed=True, fault=fault, sig=sig, TRAINING_AGENT_WORK_DIR=work_dir, **FAST_TRAINER
    )


async def accepted(api: TestClient, cluster: kmock.KubernetesEmulator, project: Project) -> str:
    """POST start through the API; returns the run's name once the controller has made its Job."""
    response = await asyncio.to_thread(
        api.post, "/agents/training/start", json={"project_id": str(project.id)}
    )
    assert response.status_code == 200, response.text
    name = str(response.json()["run_name"])
    await eventually(lambda: dict(cluster.objects[JOBS, NAMESPACE, name]), what="the Job")
    return name


def stored(world: World, project: Project) -> Project:
    current = world.records.get_project(project.id)
    assert current is not None
    return current


def ended(cluster: kmock.KubernetesEmulator, name: str) -> dict[str, Any]:
    """The run's status once it is Failed ({} before)."""
    status = run_status(cluster, name)
    return status if status.get("phase") == "Failed" else {}


def bucket_checkpoints(world: World) -> list[Path]:
    return everything_under(world.settings.resolved_local_bucket_dir / "checkpoints")


def messages(world: World, project: Project) -> list[str]:
    return [log.message for log in world.records.recent_logs(project.id, limit=500)]


# -- the trainer pod killed -------------------------------------------------------------------------------
async def test_pod_killed_and_the_job_fails_after_its_backoff(
    world: World, cluster: kmock.KubernetesEmulator, control_plane: Any
) -> None:
    """SIGKILL during the upload (two epochs' checkpoint in the bucket), reported: the pod fails with 137,
    the Job with BackoffLimitExceeded; the controller fails the project with that reason and removes the
    run's checkpoint."""
    api, settings = await control_plane()
    k8s_api = api_client(settings)
    project = world.project()
    name = await accepted(api, cluster, project)
    await patch_job_status(k8s_api, name, {"active": 1})
    await put_pod(k8s_api, name, 1, running_status())
    assert await asyncio.to_thread(run_pod, world, project, "pod1", fault="upload") == -9
    assert bucket_checkpoints(world)
    await put_pod(k8s_api, name, 1, terminated_status(137))
    failed = {"active": 0, "failed": 1, **failed_condition("BackoffLimitExceeded", BACKOFF_MESSAGE)}
    await patch_job_status(k8s_api, name, failed)
    status = await eventually(lambda: ended(cluster, name), what="Failed")
    assert status["reason"] == "BackoffLimitExceeded"
    await eventually(lambda: stored(world, project).status == "failed", what="the project failed")
    assert stored(world, project).metadata["error"]["message"] == f"BackoffLimitExceeded: {BACKOFF_MESSAGE}"
    # The controller removes a run's checkpoints right after the status patch that ends it.
    await eventually(lambda: not bucket_checkpoints(world), what="the checkpoint removed")
    assert world.assert_settled(project) == "failed"


async def test_pod_terminated_the_next_pod_resumes_and_finishes(
    world: World, cluster: kmock.KubernetesEmulator, control_plane: Any
) -> None:
    """SIGTERM after the first epoch (preemption): the trainer checkpoints and exits 75, which the Job's
    podFailurePolicy ignores; the Job's next pod runs the same run, resumes at the second epoch and
    finishes; the run Succeeded with the model's URL."""
    api, settings = await control_plane()
    project = world.project()
    name = await accepted(api, cluster, project)
    k8s_api = api_client(settings)
    await patch_job_status(k8s_api, name, {"active": 1})
    await put_pod(k8s_api, name, 1, running_status())
    assert await asyncio.to_thread(run_pod, world, project, "pod1", fault="epoch:1", sig="TERM") == EXIT_RETRY
    await put_pod(k8s_api, name, 1, terminated_status(EXIT_RETRY))
    await eventually(lambda: run_status(cluster, name).get("reason") == "Retrying", what="Retrying")
    assert world.assert_settled(project, allow_training=True) == "training"
    assert bucket_checkpoints(world)  # kept for the next pod

    await put_pod(k8s_api, name, 2, running_status())
    assert await asyncio.to_thread(run_pod, world, project, "pod2") == EXIT_OK
    await put_pod(k8s_api, name, 2, terminated_status(0))
    complete = {"active": 0, "succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    await patch_job_status(k8s_api, name, complete)
    status = await eventually(
        lambda: run_status(cluster, name).get("phase") == "Succeeded" and run_status(cluster, name),
        what="Succeeded",
    )
    assert world.assert_settled(project) == "pending_evaluation"
    [model] = world.records.list_models(project.id)
    assert status["modelUrl"] == model.gcs_url
    assert model.metadata["attempt"] == 2
    assert model.metadata["run_id"] == stored(world, project).metadata["training_run"]["run_id"]
    assert any(
        m.startswith("Resuming from the checkpoint") and "(1 epochs done)" in m
        for m in messages(world, project)
    )


# -- the control plane killed mid-start --------------------------------------------------------------------
async def wait_for(check: Callable[[], object], what: str, timeout_s: float = 30) -> None:
    """Poll a blocking `check` from a thread, keeping this loop (kmock's) free."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await asyncio.to_thread(check):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not {what} after {timeout_s} s")
        await asyncio.sleep(0.1)


async def test_api_killed_between_the_claim_and_the_trainingrun(
    world: World, cluster: kmock.KubernetesEmulator, kubeconfig: Path
) -> None:
    """`serve` (kubernetes executor) SIGKILLed right after the claim: the project is `training` with a
    kubernetes run record and no TrainingRun, which no controller can see. The next `serve` fails it once
    it is older than a lease."""
    env = {
        "TRAINING_AGENT_EXECUTOR": "kubernetes",
        "TRAINING_AGENT_KUBECONFIG": str(kubeconfig),
        "TRAINING_AGENT_NAMESPACE": NAMESPACE,
        "TRAINING_AGENT_TRAINER_IMAGE": IMAGE,
        "TRAINING_AGENT_RUN_LEASE_SECONDS": "2",  # the grace before a lost start is failed
    }
    project = world.project()
    servers = [Serve(world, fault="claimed", **env)]
    try:
        await wait_for(servers[0].ready, "the first server ready")
        response = await asyncio.to_thread(
            servers[0].request, "POST", "/agents/training/start", json={"project_id": str(project.id)}
        )
        assert response is None
        await wait_for(servers[0].killed, "the server killed after the claim", timeout_s=10)
        run = stored(world, project).metadata["training_run"]
        assert stored(world, project).status == "training" and run["executor"] == "kubernetes"
        servers.append(Serve(world, **env))
        await wait_for(servers[1].ready, "the second server ready")
        await wait_for(lambda: stored(world, project).status == "failed", "the lost run failed", timeout_s=15)
        error = stored(world, project).metadata["error"]
        assert (error["message"], error["type"]) == (UNSUBMITTED_MESSAGE, "NotSubmitted")
        assert not [key for key in cluster.objects if str(key[0]) == str(kmock.resource(RUNS))]
        assert await asyncio.to_thread(servers[1].stop) == 0
        world.assert_settled(project)
    finally:
        for serve in servers:
            await asyncio.to_thread(serve.stop)


async def test_controller_killed_between_the_job_and_its_status(
    world: World,
    cluster: kmock.KubernetesEmulator,
    kubeconfig: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The controller created the Job and stopped before it wrote `jobName` into the run's status: the next
    controller finds the Job (409) and makes no second one. (tests/controller/test_operator.py's restart
    test stops the controller after the Job, not deterministically before the status.)"""
    settings = k8s_settings(world, kubeconfig)
    k8s_api = api_client(settings)
    project = world.project()
    world.records.transition_project(project.id, from_status="pending_training", to_status="training")

    def dies(*_: Any, **__: Any) -> None:
        raise RuntimeError("the controller stopped here")

    with monkeypatch.context() as patch:
        patch.setattr(Reconciler, "reconcile", dies)  # nothing after ensure_job reaches the cluster
        first = OperatorThread(settings, world.records, k8s_api, NAMESPACE)
        try:
            name = (
                await asyncio.to_thread(KubernetesExecutor(settings, world.records).submit, project.id)
            ).name
            await eventually(lambda: dict(cluster.objects[JOBS, NAMESPACE, name]), what="the Job")
        finally:
            await asyncio.to_thread(first.stop)
    assert "jobName" not in run_status(cluster, name)
    second = OperatorThread(settings, world.records, k8s_api, NAMESPACE)
    try:
        status = await eventually(
            lambda: run_status(cluster, name).get("jobName") and run_status(cluster, name)
        )
        assert status["phase"] == "Pending"
        await asyncio.sleep(1.0)  # a few resyncs
        assert jobs_stored(cluster) == 1 and not job_gone(cluster, name)
        deletes = [
            r for r in list(cluster) if str(r.method.value).upper() == "DELETE" and "/jobs" in r.url.path
        ]
        assert deletes == []
        assert jobs_created(cluster) == 2  # the new controller did try: its create was answered 409
    finally:
        await asyncio.to_thread(second.stop)
