"""Kubernetes API clients (the official `kubernetes` package), built from the settings rather than from
import-time globals, so one process can talk to the cluster it was told to."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

from kubernetes import client, config

from training_agent.core.errors import ConfigurationError
from training_agent.core.settings import Settings
from training_agent.core.trainingrun import GROUP, PLURAL, VERSION

_IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def api_client(settings: Settings) -> client.ApiClient:
    """In a pod: its service account. Elsewhere: TRAINING_AGENT_KUBECONFIG, $KUBECONFIG or ~/.kube/config."""
    try:
        if settings.kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return client.ApiClient(configuration)
        path = str(settings.kubeconfig) if settings.kubeconfig else None
        api: client.ApiClient = config.new_client_from_config(config_file=path)  # type: ignore[no-untyped-call]
        return api
    except (config.ConfigException, OSError) as exc:
        raise ConfigurationError(
            f"Cannot configure the Kubernetes client: {exc}. Set TRAINING_AGENT_KUBECONFIG or KUBECONFIG, "
            "or run in a pod with a service account"
        ) from exc


class TrainingRuns:
    """CRUD on TrainingRun objects in one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body),
        )

    def get(self, name: str) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name),
        )

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def patch_status(self, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, PLURAL, name, {"status": status}
        )

    def list(self, limit: int | None = None) -> list[dict[str, Any]]:
        result = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, limit=limit
        )
        return cast(list[dict[str, Any]], cast(dict[str, Any], result).get("items", []))
