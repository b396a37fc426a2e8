"""The operator end to end against kmock: runs become Jobs, Job state becomes run and project state."""

from __future__ import annotations

import asyncio
from typing import Any

import kmock
from kubernetes import client

from tests.controller.conftest import (
    NAMESPACE,
    create_run,
    eventually,
    job,
    job_gone,
    training_project,
)
from training_agent.core.kube import TrainingRuns
from training_agent.core.records import NewModel, Project, RecordsStore
from training_agent.core.settings import Settings

RUNS = "automl.dev/v1alpha1/trainingruns"


def run_status(cluster: kmock.KubernetesEmulator, name: str) -> dict[str, Any]:
    return dict(cluster.objects[RUNS, NAMESPACE, name].get("status") or {})


def posts(cluster: kmock.KubernetesEmulator, path_end: str) -> list[Any]:
    """The POST requests kmock received to URLs ending with `path_end`."""
    return [
        r for r in list(cluster) if str(r.method.value).upper() == "POST" and r.url.path.endswith(path_end)
    ]


async def event_posted(cluster: kmock.KubernetesEmulator, run: str, reason: str) -> None:
    """Wait until an Event with `reason` was posted about `run`. kopf only queues an event, and its poster
    sends it later, so it may arrive after the status, the project and the log row of the same transition:
    a test waits for it by name, since the newest event an instant earlier is still the previous one's."""
    await eventually(lambda: reason in events_for(cluster, run), what=f"the {reason} event")


def jobs_created(cluster: kmock.KubernetesEmulator) -> int:
    return len(posts(cluster, "/jobs"))


def jobs_stored(cluster: kmock.KubernetesEmulator) -> int:
    return sum(1 for key in cluster.objects if str(key[0]) == str(kmock.resource("batch/v1/jobs")))


async def test_run_becomes_one_job(
    cluster: kmock.KubernetesEmulator,
    controller: Any,
    k8s_api: client.ApiClient,
    k8s_settings: Settings,
    k8s_records: RecordsStore,
) -> None:
    await controller()
    project = training_project(k8s_records)
    name = await create_run(k8s_api, k8s_settings, project)
    created = await eventually(lambda: job(cluster, name), what="the Job")

    container = created["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/trainer:1.0"
    assert container["command"] == ["training-agent", "train", "--project-id", str(project.id), "--claimed"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["envFrom"] == [{"secretRef": {"name": "training-agent-env"}}]
    assert {"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/var/secrets/gcs/key.json"} in container[
        "env"
    ]
    assert {"name": "gcs-key", "mountPath": "/var/secrets/gcs", "readOnly": True} in container["volumeMounts"]
    volumes = {v["name"]: v for v in created["spec"]["template"]["spec"]["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert created["spec"]["podFailurePolicy"]["rules"][2]["onExitCodes"]["values"] == [2, 3]
    [owner] = created["metadata"]["ownerReferences"]
    assert owner["kind"] == "TrainingRun" and owner["name"] == name and owner["controller"] is True
    assert (await eventually(lambda: run_status(cluster, name).get("phase"), what="a phase")) == "Pending"
    assert jobs_stored(cluster) == 1  # a repeated create is answered 409 and changes nothing


# -- playing the cluster: kmock has no Job controller or kubelet ------------------------------------------
async def patch_job_status(k8s_api: client.ApiClient, name: str, status: dict[str, Any]) -> None:
    batch = client.BatchV1Api(k8s_api)
    await asyncio.to_thread(batch.patch_namespaced_job_status, name, NAMESPACE, {"status": status})


async def start_pod(k8s_api: client.ApiClient, run: str, status: dict[str, Any]) -> None:
    core = client.CoreV1Api(k8s_api)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{run}-abcde",
            "namespace": NAMESPACE,
            "labels": {"automl.dev/training-run": run, "job-name": run},
        },
        "spec": {"containers": [{"name": "trainer", "image": "registry.example/trainer:1.0"}]},
    }
    await asyncio.to_thread(core.create_namespaced_pod, NAMESPACE, pod)  # type: ignore[arg-type]
    await asyncio.to_thread(core.patch_namespaced_pod_status, f"{run}-abcde", NAMESPACE, {"status": status})


def failed_condition(reason: str, message: str = "") -> dict[str, Any]:
    return {"conditions": [{"type": "Failed", "status": "True", "reason": reason, "message": message}]}


def events_for(cluster: kmock.KubernetesEmulator, run: str) -> list[str]:
    """Reasons of the Events posted about `run` (kmock stores only the first: it has no generateName)."""
    return [
        r.data.get("reason")
        for r in posts(cluster, "/events")
        if ((r.data or {}).get("involvedObject") or {}).get("name") == run
    ]


async def test_running_then_succeeded(
    cluster: kmock.KubernetesEmulator,
    k8s_api: client.ApiClient,
    k8s_records: RecordsStore,
    started_run: tuple[Project, str],
) -> None:
    project, name = started_run
    await start_pod(k8s_api, name, {"phase": "Running"})
    await patch_job_status(k8s_api, name, {"active": 1})
    await eventually(lambda: run_status(cluster, name).get("phase") == "Running", what="Running")
    # The trainer reports an epoch and, later, its model and the project's new status.
    k8s_records.insert_log(
        project.id,
        "training_agent",
        "info",
        "Epoch 1/4",
        {
            "epoch": 1,
            "train_loss": 0.7,
            "val_loss": 0.6,
            "val_accuracy": 0.55,
            "images_per_s": 900.0,
            "seconds": 10.0,
            "total_epochs": 4,
        },
    )
    progress = await eventually(
        lambda: (
            run_status(cluster, name).get("progress", {}).get("epoch") == 1
            and run_status(cluster, name)["progress"]
        ),
        what="progress",
    )
    assert progress == {
        "epoch": 1,
        "totalEpochs": 4,
        "epochText": "1/4",
        "trainLoss": 0.7,
        "valAccuracy": 0.55,
        "imagesPerSecond": 900.0,
    }
    k8s_records.insert_model(
        NewModel(project_id=project.id, name="p_model", gcs_url="gs://b/models/p_model.pth")
    )
    k8s_records.transition_project(project.id, from_status="training", to_status="pending_evaluation")
    await patch_job_status(
        k8s_api, name, {"active": 0, "succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    )
    status = await eventually(
        lambda: run_status(cluster, name).get("phase") == "Succeeded" and run_status(cluster, name),
        what="Succeeded",
    )
    assert status["modelUrl"] == "gs://b/models/p_model.pth"
    assert status["startTime"] and status["completionTime"]
    assert [c["type"] for c in status["conditions"]] == ["Pending", "Running", "Succeeded"]
    assert k8s_records.get_project(project.id).status == "pending_evaluation"  # type: ignore[union-attr]
    # One Event per transition; Pending's reason depends on whether the Job was there at the first look.
    events = await eventually(lambda: len(events_for(cluster, name)) == 3 and events_for(cluster, name))
    assert events[0] in ("Pending", "JobNotCreated") and events[1:] == ["Running", "Completed"]


async def test_oomkilled_fails_the_project(
    cluster: kmock.KubernetesEmulator,
    k8s_api: client.ApiClient,
    k8s_records: RecordsStore,
    started_run: tuple[Project, str],
) -> None:
    project, name = started_run
    await start_pod(
        k8s_api,
        name,
        {
            "phase": "Failed",
            "containerStatuses": [
                {
                    "name": "trainer",
                    "image": "x",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
                }
            ],
        },
    )
    await patch_job_status(
        k8s_api, name, failed_condition("BackoffLimitExceeded", "Job has reached the backoff limit")
    )
    status = await eventually(
        lambda: run_status(cluster, name).get("phase") == "Failed" and run_status(cluster, name)
    )
    assert status["reason"] == "OOMKilled"
    stored = await eventually(
        lambda: (p := k8s_records.get_project(project.id)) and p.status == "failed" and p
    )
    assert stored.metadata["error"]["message"].startswith("OOMKilled")
    assert stored.metadata["error"]["step"] == "kubernetes"
    # The status moves first, the agent_logs row follows it.
    await eventually(
        lambda: [log.log_level for log in k8s_records.recent_logs(project.id)] == ["error"], what="the log"
    )
    await event_posted(cluster, name, "OOMKilled")


async def test_deadline_exceeded(
    cluster: kmock.KubernetesEmulator,
    k8s_api: client.ApiClient,
    k8s_records: RecordsStore,
    started_run: tuple[Project, str],
) -> None:
    project, name = started_run
    await patch_job_status(
        k8s_api, name, failed_condition("DeadlineExceeded", "Job was active longer than specified")
    )
    stored = await eventually(
        lambda: (p := k8s_records.get_project(project.id)) and p.status == "failed" and p
    )
    assert stored.metadata["error"]["message"] == "DeadlineExceeded: Job was active longer than specified"
    assert run_status(cluster, name)["reason"] == "DeadlineExceeded"


async def test_trainer_failure_is_not_overwritten(
    cluster: kmock.KubernetesEmulator,
    k8s_api: client.ApiClient,
    k8s_records: RecordsStore,
    started_run: tuple[Project, str],
) -> None:
    project, name = started_run
    trainer_error = {"message": "The dataset file is not a zip archive", "step": "extract"}
    k8s_records.transition_project(
        project.id, from_status="training", to_status="failed", metadata_patch={"error": trainer_error}
    )
    await patch_job_status(
        k8s_api, name, failed_condition("PodFailurePolicy", "Container trainer exited with 3")
    )
    await eventually(lambda: run_status(cluster, name).get("phase") == "Failed", what="Failed")
    await asyncio.sleep(0.5)  # the project update would follow the status patch: give it the time
    assert k8s_records.get_project(project.id).metadata["error"] == trainer_error  # type: ignore[union-attr]
    assert k8s_records.recent_logs(project.id) == []


async def test_unschedulable_is_queued_and_suspended_is_queued(
    cluster: kmock.KubernetesEmulator,
    k8s_api: client.ApiClient,
    started_run: tuple[Project, str],
) -> None:
    _, name = started_run
    await start_pod(
        k8s_api,
        name,
        {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                }
            ],
        },
    )
    await patch_job_status(k8s_api, name, {"active": 1})
    status = await eventually(
        lambda: run_status(cluster, name).get("phase") == "Queued" and run_status(cluster, name)
    )
    assert status["message"] == "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."


async def test_restarts_and_replays_make_one_job_and_lose_no_transition(
    cluster: kmock.KubernetesEmulator,
    controller: Any,
    k8s_api: client.ApiClient,
    k8s_settings: Settings,
    k8s_records: RecordsStore,
) -> None:
    first = await controller()
    project = training_project(k8s_records)
    name = await create_run(k8s_api, k8s_settings, project)
    await eventually(lambda: job(cluster, name), what="the Job")
    # Stop the controller, let the Job fail while nobody watches, start a new controller.
    await asyncio.to_thread(first.stop)
    await patch_job_status(k8s_api, name, failed_condition("DeadlineExceeded", "too long"))
    await controller()  # its watch replays every object as ADDED: the run, the Job
    await eventually(lambda: run_status(cluster, name).get("phase") == "Failed", what="Failed after restart")
    stored = await eventually(
        lambda: (p := k8s_records.get_project(project.id)) and p.status == "failed" and p
    )
    assert stored.metadata["error"]["message"] == "DeadlineExceeded: too long"
    await controller()  # and once more, beside the second: nothing changes, nothing is made twice
    await asyncio.sleep(1.0)
    assert jobs_stored(cluster) == 1
    assert len([log for log in k8s_records.recent_logs(project.id) if log.log_level == "error"]) == 1


async def test_deleting_the_run_cancels(
    cluster: kmock.KubernetesEmulator,
    k8s_api: client.ApiClient,
    k8s_records: RecordsStore,
    started_run: tuple[Project, str],
) -> None:
    project, name = started_run
    await eventually(
        lambda: cluster.objects[RUNS, NAMESPACE, name]["metadata"].get("finalizers"), what="finalizer"
    )
    await asyncio.to_thread(TrainingRuns(k8s_api, NAMESPACE).delete, name)
    stored = await eventually(
        lambda: (p := k8s_records.get_project(project.id)) and p.status == "failed" and p
    )
    assert stored.metadata["error"]["message"] == "Cancelled: The TrainingRun was deleted"
    await eventually(lambda: job_gone(cluster, name), what="the Job deleted")


async def test_liveness_probe(
    cluster: kmock.KubernetesEmulator,
    k8s_settings: Settings,
    k8s_records: RecordsStore,
    k8s_api: client.ApiClient,
) -> None:
    from tests.support.kube import OperatorThread
    from tests.support.postgres import free_port

    url = f"http://127.0.0.1:{free_port()}/healthz"
    op = OperatorThread(k8s_settings, k8s_records, k8s_api, NAMESPACE, liveness_endpoint=url)
    try:
        import httpx

        async with httpx.AsyncClient() as http:

            async def probe() -> Any:
                try:
                    response = await http.get(url, timeout=2)
                except httpx.HTTPError:
                    return None
                return response.status_code == 200 and response.json()

            body = None
            deadline = asyncio.get_running_loop().time() + 15
            while not body and asyncio.get_running_loop().time() < deadline:
                body = await probe()
                await asyncio.sleep(0.1)
        assert body is not None and "reconciled" in body
    finally:
        await asyncio.to_thread(op.stop)


def test_every_copy_of_the_crd_is_identical() -> None:
    from pathlib import Path

    from tests.support.kube import CRD_FILE

    root = CRD_FILE.parents[2]
    copies = [p for p in root.rglob(CRD_FILE.name) if ".venv" not in p.parts and ".git" not in p.parts]
    assert CRD_FILE in copies
    assert all(Path(p).read_bytes() == CRD_FILE.read_bytes() for p in copies), copies
