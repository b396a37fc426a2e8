"""The Job a TrainingRun becomes: a pure function of the run's spec, unit-tested without a cluster.
Several GPUs and several nodes (torchrun, Indexed Job, Service, JobSet) are in distributed.py."""

from __future__ import annotations

from typing import Any

from training_agent.controller.distributed import (
    build_jobset,
    build_service,
    make_indexed,
    multi_node,
    trainer_command,
    uses_jobset,
)
from training_agent.core.errors import EXIT_INVALID_INPUT, EXIT_RETRY, EXIT_USAGE
from training_agent.core.trainingrun import LABEL_PROJECT, LABEL_RUN, MANAGED_BY, TrainingRunSpec

CONTAINER = "trainer"
WORK_DIR = "/work"
GCS_KEY_DIR = "/var/secrets/gcs"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
RUN_AS_USER = 1000


def job_labels(name: str, spec: TrainingRunSpec) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": "training-agent-trainer",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_RUN: name,
        LABEL_PROJECT: str(spec.project_id),
    }
    if spec.queue_name:
        labels[KUEUE_QUEUE_LABEL] = spec.queue_name
    return labels


def _resources(spec: TrainingRunSpec) -> dict[str, Any]:
    resources: dict[str, Any] = {k: dict(v) for k, v in spec.resources.items() if isinstance(v, dict)}
    if spec.gpus > 0:
        # GPUs are only limits in Kubernetes (the request equals the limit).
        resources.setdefault("limits", {})["nvidia.com/gpu"] = str(spec.gpus)  # quantities are strings
    return resources


def _env(spec: TrainingRunSpec) -> list[dict[str, Any]]:
    env = [
        {"name": "TRAINING_AGENT_WORK_DIR", "value": WORK_DIR},
        {"name": "TRAINING_AGENT_DEVICE", "value": "cuda" if spec.gpus > 0 else "cpu"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if spec.gcs_secret_name:
        env.append({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": f"{GCS_KEY_DIR}/key.json"})
    return env


def _env_from(spec: TrainingRunSpec) -> list[dict[str, Any]]:
    # The Secret comes last so that its keys win over a ConfigMap key of the same name.
    env_from: list[dict[str, Any]] = []
    if spec.env_config_map_name:
        env_from.append({"configMapRef": {"name": spec.env_config_map_name}})
    if spec.env_secret_name:
        env_from.append({"secretRef": {"name": spec.env_secret_name}})
    return env_from


def _volumes(spec: TrainingRunSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        # DataLoader workers pass batches through shared memory; the container default (64 MiB) is too small.
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size_limit}},
        {"name": "work", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "dshm", "mountPath": "/dev/shm"},  # noqa: S108 - a mount point, not a temp file
        {"name": "work", "mountPath": WORK_DIR},
    ]
    if spec.gcs_secret_name:
        volumes.append({"name": "gcs-key", "secret": {"secretName": spec.gcs_secret_name}})
        mounts.append({"name": "gcs-key", "mountPath": GCS_KEY_DIR, "readOnly": True})
    return volumes, mounts


def _pod_failure_policy() -> dict[str, Any]:
    return {
        "rules": [
            # Preemption, eviction, node drain: not the trainer's fault, so not counted against backoffLimit.
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            # The trainer stopped on SIGTERM after writing a checkpoint: the next pod resumes from it, and the
            # stop is not counted against backoffLimit (activeDeadlineSeconds still bounds the whole run).
            {
                "action": "Ignore",
                "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [EXIT_RETRY]},
            },
            # Invalid data or configuration: no retry can succeed, fail the Job at once.
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER,
                    "operator": "In",
                    "values": [EXIT_USAGE, EXIT_INVALID_INPUT],
                },
            },
        ]
    }


def build_job(name: str, namespace: str, spec: TrainingRunSpec) -> dict[str, Any]:
    """The batch/v1 Job that runs `training-agent train --claimed` for the run's project (under torchrun for
    several GPUs; an Indexed Job of one pod per node for several nodes)."""
    labels = job_labels(name, spec)
    volumes, mounts = _volumes(spec)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image,
        "command": trainer_command(name, spec),
        "env": _env(spec),
        "resources": _resources(spec),
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
        },
    }
    if spec.image_pull_policy:
        container["imagePullPolicy"] = spec.image_pull_policy
    env_from = _env_from(spec)
    if env_from:
        container["envFrom"] = env_from
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # SIGTERM → SIGKILL: time to finish the step and upload a checkpoint.
        "terminationGracePeriodSeconds": spec.termination_grace_seconds,
        "containers": [container],
        "volumes": volumes,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    optional = {
        "nodeSelector": spec.node_selector or None,
        "tolerations": spec.tolerations or None,
        "priorityClassName": spec.priority_class_name,
        "runtimeClassName": spec.runtime_class_name,
        "serviceAccountName": spec.service_account_name,
    }
    pod_spec.update({k: v for k, v in optional.items() if v})
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.backoff_limit,
        "activeDeadlineSeconds": spec.active_deadline_seconds,
        "ttlSecondsAfterFinished": spec.ttl_seconds_after_finished,
        "podFailurePolicy": _pod_failure_policy(),
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if multi_node(spec):
        make_indexed(job_spec, name, spec)
    if spec.queue_name:
        job_spec["suspend"] = True  # Kueue admits (unsuspends) the Job when its quota allows
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": job_spec,
    }


def build_objects(name: str, namespace: str, spec: TrainingRunSpec) -> list[dict[str, Any]]:
    """Everything the run needs in the cluster, in the order to create it: the Job alone; for several
    nodes the headless Service first (so pod 0's name resolves as soon as it exists), then the Indexed Job;
    or a JobSet, which makes its own Service. The last object is the workload the status is read from."""
    job = build_job(name, namespace, spec)
    if uses_jobset(spec):
        return [build_jobset(job, KUEUE_QUEUE_LABEL)]
    if multi_node(spec):
        service_labels = {k: v for k, v in job["metadata"]["labels"].items() if k != KUEUE_QUEUE_LABEL}
        return [build_service(name, namespace, service_labels), job]
    return [job]
