"""On Kubernetes the controller sees runs end: against kmock, a Job that fails, one that completes and a
deleted TrainingRun each give one closing `agent_logs` row and one signed report to a real receiver."""

from __future__ import annotations

import asyncio
from typing import Any

import kmock
import pytest
from kubernetes import client
from pydantic import SecretStr

from tests.conftest import seed_project
from tests.controller.conftest import NAMESPACE, create_run, eventually, job
from tests.controller.test_operator import failed_condition, patch_job_status
from tests.support.receiver import SECRET, Receiver, receiving
from training_agent.core.completion import COMPLETE, FAILED
from training_agent.core.kube import TrainingRuns
from training_agent.core.lease import claim_project
from training_agent.core.records import NewModel, Project, RecordsStore
from training_agent.core.settings import Settings


@pytest.fixture
def k8s_settings(k8s_settings: Settings) -> Settings:
    return k8s_settings.model_copy(
        update={
            "callback_allowed_hosts": "127.0.0.1",
            "callback_secret": SecretStr(SECRET),
            "callback_backoff_seconds": 0.05,
            "callback_timeout_seconds": 2.0,
        }
    )


async def run_with_callback(
    cluster: kmock.KubernetesEmulator,
    controller: Any,
    k8s_api: client.ApiClient,
    settings: Settings,
    records: RecordsStore,
    receiver: Receiver,
) -> tuple[Project, str]:
    """What the API does for a start with a callback_url: claim (the URL into the run record), then the
    TrainingRun; the controller makes its Job."""
    await controller()
    project = seed_project(records, "gs://bucket/data.zip", name="Cluster project")
    claimed = claim_project(records, project.id, "kubernetes", callback_url=receiver.url)
    assert claimed is not None
    name = await create_run(k8s_api, settings, claimed)
    await eventually(lambda: job(cluster, name), what="the Job")
    return claimed, name


async def one_report(receiver: Receiver) -> dict[str, Any]:
    await eventually(lambda: receiver.received, what="the report")
    await asyncio.sleep(0.5)  # a second report would follow at once
    [request] = receiver.received
    assert receiver.signed(request)
    return request.payload


def closing_rows(records: RecordsStore, project: Project) -> list[tuple[str, str]]:
    rows = records.recent_logs(project.id, limit=100)
    return [(r.log_level, r.message) for r in rows if r.message.startswith((COMPLETE, FAILED))]


async def test_a_failed_job_is_reported_once(
    cluster: kmock.KubernetesEmulator,
    controller: Any,
    k8s_api: client.ApiClient,
    k8s_settings: Settings,
    k8s_records: RecordsStore,
) -> None:
    with receiving() as receiver:
        project, name = await run_with_callback(
            cluster, controller, k8s_api, k8s_settings, k8s_records, receiver
        )
        await patch_job_status(k8s_api, name, failed_condition("DeadlineExceeded", "too long"))
        payload = await one_report(receiver)
    assert (payload["status"], payload["error"]["type"]) == ("failed", "DeadlineExceeded")
    assert payload["error"]["message"] == "DeadlineExceeded: too long"
    assert closing_rows(k8s_records, project) == [
        ("error", "Training failed for project Cluster project: DeadlineExceeded: too long")
    ]


async def test_a_completed_job_is_reported_with_the_model(
    cluster: kmock.KubernetesEmulator,
    controller: Any,
    k8s_api: client.ApiClient,
    k8s_settings: Settings,
    k8s_records: RecordsStore,
) -> None:
    with receiving() as receiver:
        project, name = await run_with_callback(
            cluster, controller, k8s_api, k8s_settings, k8s_records, receiver
        )
        # The trainer records its model and the project's new status, then its Job completes.
        k8s_records.insert_model(
            NewModel(
                project_id=project.id,
                name="m",
                gcs_url="gs://b/models/m.pth",
                metadata={"test_accuracy": 0.8, "history": []},
            )
        )
        k8s_records.transition_project(project.id, from_status="training", to_status="pending_evaluation")
        await patch_job_status(
            k8s_api,
            name,
            {"active": 0, "succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]},
        )
        payload = await one_report(receiver)
    assert payload["status"] == "pending_evaluation" and payload["model_url"] == "gs://b/models/m.pth"
    assert payload["metrics"] == {"test_accuracy": 0.8} and payload["error"] is None


async def test_a_deleted_run_is_reported_cancelled(
    cluster: kmock.KubernetesEmulator,
    controller: Any,
    k8s_api: client.ApiClient,
    k8s_settings: Settings,
    k8s_records: RecordsStore,
) -> None:
    with receiving() as receiver:
        project, name = await run_with_callback(
            cluster, controller, k8s_api, k8s_settings, k8s_records, receiver
        )
        runs = "automl.dev/v1alpha1/trainingruns"
        await eventually(
            lambda: cluster.objects[runs, NAMESPACE, name]["metadata"].get("finalizers"), what="finalizer"
        )
        await asyncio.to_thread(TrainingRuns(k8s_api, NAMESPACE).delete, name)
        payload = await one_report(receiver)
    assert (payload["status"], payload["error"]["type"]) == ("failed", "Cancelled")
    assert closing_rows(k8s_records, project) == [
        ("error", "Training failed for project Cluster project: Cancelled: The TrainingRun was deleted")
    ]
