"""The run's objects in the cluster — its Job, the headless Service of a run of several nodes, or its
JobSet — created, read and deleted through one small interface, so the Reconciler does not care which."""

from __future__ import annotations

import logging
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from training_agent.controller.distributed import (
    JOBSET_GROUP,
    JOBSET_VERSION,
    JOBSETS,
    jobset_as_job,
    multi_node,
    uses_jobset,
)
from training_agent.core.trainingrun import TrainingRunSpec

logger = logging.getLogger(__name__)


def plain(api: client.ApiClient, obj: Any) -> dict[str, Any]:
    """A client model as the plain camelCase dict the API server sent."""
    as_dict: dict[str, Any] = api.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
    return as_dict


def _absent_is_fine(exc: ApiException) -> None:
    if exc.status != 404:
        raise exc


class Workload:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def create(self, namespace: str, objects: list[dict[str, Any]]) -> dict[str, Any]:
        """Create each object (one already there, 409, is kept: names are deterministic, so it is this
        run's); returns the last, the workload, as the server stored it."""
        created: dict[str, Any] = objects[-1]
        for obj in objects:
            try:
                created = self._create_one(namespace, obj)
                logger.info("Created %s %s/%s", obj["kind"], namespace, obj["metadata"]["name"])
            except ApiException as exc:
                if exc.status != 409:
                    raise
                created = obj
        return created

    def _create_one(self, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        # The client takes plain dicts as well as its models.
        if obj["kind"] == "Service":
            return plain(self.api, self.core.create_namespaced_service(namespace, obj))  # type: ignore[arg-type]
        if obj["kind"] == "JobSet":
            created = self.custom.create_namespaced_custom_object(
                JOBSET_GROUP, JOBSET_VERSION, namespace, JOBSETS, obj
            )
            return cast(dict[str, Any], created)
        return plain(self.api, self.batch.create_namespaced_job(namespace, obj))  # type: ignore[arg-type]

    def read(self, namespace: str, name: str, spec: TrainingRunSpec) -> dict[str, Any] | None:
        """The run's Job (a JobSet in a Job's shape), or None if there is none."""
        try:
            if uses_jobset(spec):
                jobset = self.custom.get_namespaced_custom_object(
                    JOBSET_GROUP, JOBSET_VERSION, namespace, JOBSETS, name
                )
                return jobset_as_job(cast(dict[str, Any], jobset))
            return plain(self.api, self.batch.read_namespaced_job(name, namespace))
        except ApiException as exc:
            _absent_is_fine(exc)
            return None

    def delete(self, namespace: str, name: str, spec: TrainingRunSpec | None) -> None:
        """Delete the run's Job (or JobSet) and its Service; what is gone already is fine. Without a
        readable spec, only the Job (all a run of this controller's older versions ever had)."""
        try:
            if spec is not None and uses_jobset(spec):
                self.custom.delete_namespaced_custom_object(
                    JOBSET_GROUP, JOBSET_VERSION, namespace, JOBSETS, name, propagation_policy="Background"
                )
            else:
                self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
        except ApiException as exc:
            _absent_is_fine(exc)
        if spec is not None and multi_node(spec) and not uses_jobset(spec):
            try:
                self.core.delete_namespaced_service(name, namespace)
            except ApiException as exc:
                _absent_is_fine(exc)
