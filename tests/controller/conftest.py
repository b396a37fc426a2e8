"""The controller against kmock: a stateful emulation of the Kubernetes API over real HTTP (no cluster can
run here). kopf and the kubernetes client talk to it exactly as to a cluster. kmock has no Job controller:
tests play the cluster by PATCHing Job and Pod status. See ../shared/TESTING.md for its caveats."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import kmock
import pytest
from kubernetes import client

from tests.conftest import make_settings, seed_project
from tests.support.kube import ClusterEmulator, OperatorThread, register_crd, write_kubeconfig
from training_agent.api.executors.kubernetes import spec_for
from training_agent.core.kube import TrainingRuns, api_client
from training_agent.core.records import Project, RecordsStore
from training_agent.core.records.sqlite import SQLiteRecords
from training_agent.core.settings import Settings
from training_agent.core.trainingrun import trainingrun_manifest

NAMESPACE = "ml"
JOBS = "batch/v1/jobs"


@pytest.fixture
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    return {**kmock_options, "cls": ClusterEmulator}


@pytest.fixture
async def cluster(kmock: kmock.KubernetesEmulator) -> kmock.KubernetesEmulator:
    register_crd(kmock)
    return kmock


@pytest.fixture
def k8s_settings(tmp_path: Path, cluster: kmock.KubernetesEmulator) -> Settings:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(cluster.url).rstrip("/"), NAMESPACE)
    return make_settings(
        tmp_path,
        kubeconfig=kubeconfig,
        namespace=NAMESPACE,
        executor="kubernetes",
        trainer_image="registry.example/trainer:1.0",
        trainer_gcs_secret="gcs-key",
        controller_resync_seconds=0.5,
        trainer_image_pull_grace_seconds=60,
    )


@pytest.fixture
def k8s_records(k8s_settings: Settings) -> RecordsStore:
    return SQLiteRecords(k8s_settings.resolved_database_path)


@pytest.fixture
def k8s_api(k8s_settings: Settings) -> client.ApiClient:
    return api_client(k8s_settings)


@pytest.fixture
async def controller(
    k8s_settings: Settings, k8s_records: RecordsStore, k8s_api: client.ApiClient
) -> AsyncIterator[Callable[[], Awaitable[OperatorThread]]]:
    """Start (and restart) operators; all are stopped at the end of the test."""
    running: list[OperatorThread] = []

    async def start() -> OperatorThread:
        op = OperatorThread(k8s_settings, k8s_records, k8s_api, NAMESPACE)
        running.append(op)
        await asyncio.sleep(0.5)  # let it log in and start its watches
        return op

    yield start
    for op in running:
        await asyncio.to_thread(op.stop)  # keep this loop (kmock's) free while kopf winds down


async def eventually(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy, for at most `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            last = check()
            if last:
                return last
        except (KeyError, LookupError):
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def job_gone(cluster: kmock.KubernetesEmulator, name: str) -> bool:
    """The run's Job was deleted, or never made. (`key in cluster.objects` is always False in kmock: it
    compares resource objects, not strings.)"""
    try:
        stored = cluster.objects[JOBS, NAMESPACE, name]
    except KeyError:
        return True
    return bool(stored.deleted)


# -- a run under way (shared by the operator and stuck-run tests) ----------------------------------------
async def create_run(k8s_api: client.ApiClient, settings: Settings, project: Project) -> str:
    body = trainingrun_manifest(spec_for(project.id, project.metadata, settings), NAMESPACE)
    await asyncio.to_thread(TrainingRuns(k8s_api, NAMESPACE).create, body)
    return str(body["metadata"]["name"])


def training_project(records: RecordsStore) -> Project:
    project = seed_project(
        records, "gs://bucket/data.zip", metadata={"epochs": 4, "preferred_model": "resnet50"}
    )
    records.transition_project(project.id, from_status="pending_training", to_status="training")
    return project


def job(cluster: kmock.KubernetesEmulator, name: str) -> dict[str, Any]:
    return dict(cluster.objects[JOBS, NAMESPACE, name])


@pytest.fixture
async def started_run(
    cluster: kmock.KubernetesEmulator,
    controller: Any,
    k8s_api: client.ApiClient,
    k8s_settings: Settings,
    k8s_records: RecordsStore,
) -> tuple[Project, str]:
    """A controller running, a project in `training`, its TrainingRun created and its Job there."""
    await controller()
    project = training_project(k8s_records)
    name = await create_run(k8s_api, k8s_settings, project)
    await eventually(lambda: job(cluster, name), what="the Job")
    return project, name
