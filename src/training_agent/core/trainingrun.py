"""The TrainingRun custom resource (deploy/crds/): names, the spec the API writes, the status the controller
writes. Shared by the API's kubernetes executor and the controller, which never import each other."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from training_agent.core.runs import run_name

GROUP = "automl.dev"
VERSION = "v1alpha1"
PLURAL = "trainingruns"
KIND = "TrainingRun"
API_VERSION = f"{GROUP}/{VERSION}"

MANAGED_BY = "training-agent"
MAX_GPUS = 16  # per node: the most any GPU node offers
MAX_NODES = 64
LABEL_PROJECT = f"{GROUP}/project-id"
LABEL_RUN = f"{GROUP}/training-run"


class TrainingRunSpec(BaseModel):
    """`spec` of a TrainingRun, camelCase on the wire as Kubernetes resources are."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", alias_generator=None)

    project_id: UUID = Field(alias="projectId")
    image: str = Field(min_length=1)
    model: str | None = None
    epochs: int | None = Field(default=None, ge=1)
    learning_rate: float | None = Field(default=None, gt=0, alias="learningRate")
    batch_size: int | None = Field(default=None, ge=1, alias="batchSize")
    image_size: int | None = Field(default=None, ge=8, alias="imageSize")
    image_pull_policy: str | None = Field(default=None, alias="imagePullPolicy")
    gpus: int = Field(default=1, ge=0, le=MAX_GPUS)
    # More than one: an Indexed Job and a headless Service (or a JobSet), one torchrun agent per node.
    nodes: int = Field(default=1, ge=1, le=MAX_NODES)
    # What a run of several nodes becomes; one node is always a plain Job.
    workload: Literal["Job", "JobSet"] = "Job"
    # Leader: a run succeeds when node 0 does (Job successPolicy, Kubernetes 1.31+); All: every node must.
    success_policy: Literal["All", "Leader"] = Field(default="All", alias="successPolicy")
    resources: dict[str, Any] = Field(default_factory=dict)
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    priority_class_name: str | None = Field(default=None, alias="priorityClassName")
    runtime_class_name: str | None = Field(default=None, alias="runtimeClassName")
    service_account_name: str | None = Field(default=None, alias="serviceAccountName")
    env_secret_name: str | None = Field(default=None, alias="envSecretName")
    env_config_map_name: str | None = Field(default=None, alias="envConfigMapName")
    gcs_secret_name: str | None = Field(default=None, alias="gcsSecretName")
    shm_size_limit: str = Field(default="2Gi", alias="shmSizeLimit")
    active_deadline_seconds: int = Field(default=24 * 3600, ge=1, alias="activeDeadlineSeconds")
    backoff_limit: int = Field(default=2, ge=0, alias="backoffLimit")
    ttl_seconds_after_finished: int = Field(default=7 * 24 * 3600, ge=0, alias="ttlSecondsAfterFinished")
    image_pull_grace_seconds: int = Field(default=300, ge=0, alias="imagePullGraceSeconds")
    termination_grace_seconds: int = Field(default=120, ge=1, alias="terminationGracePeriodSeconds")
    queue_name: str | None = Field(default=None, alias="queueName")

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def trainingrun_manifest(spec: TrainingRunSpec, namespace: str) -> dict[str, Any]:
    """The TrainingRun object for a project, named deterministically after it."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": run_name(spec.project_id),
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/managed-by": MANAGED_BY,
                LABEL_PROJECT: str(spec.project_id),
            },
        },
        "spec": spec.to_wire(),
    }
