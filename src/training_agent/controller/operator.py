"""Assemble and run the operator: `training-agent controller`."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
from kubernetes import client

from training_agent.controller.handlers import configure, register
from training_agent.controller.metrics import ControllerMetrics, serve_metrics
from training_agent.controller.reconcile import Reconciler
from training_agent.core.kube import api_client
from training_agent.core.records import RecordsStore, open_records
from training_agent.core.settings import Settings

PEERING_NAME = "training-agent"


def connection_info(api: client.ApiClient) -> kopf.ConnectionInfo:
    """kopf's own connection, from the same client configuration as ours: one place decides the cluster."""
    config = api.configuration
    token = (config.api_key or {}).get("authorization") or (config.api_key or {}).get("BearerToken")
    if token and token.startswith("Bearer "):
        token = token[len("Bearer ") :]
    return kopf.ConnectionInfo(
        server=config.host,
        ca_path=config.ssl_ca_cert,
        insecure=not config.verify_ssl,
        scheme="Bearer" if token else None,
        token=token,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
    )


def build_registry(
    settings: Settings,
    records: RecordsStore,
    api: client.ApiClient,
    metrics: ControllerMetrics | None = None,
) -> tuple[kopf.OperatorRegistry, Reconciler]:
    registry = kopf.OperatorRegistry()
    reconciler = Reconciler(settings, records, api, metrics)
    register(registry, reconciler, resync_seconds=settings.controller_resync_seconds)

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(api)

    return registry, reconciler


def operator_settings(*, standalone: bool) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    configure(settings, standalone=standalone, peering_name=PEERING_NAME)
    return settings


async def run(
    settings: Settings,
    *,
    namespaces: list[str],
    standalone: bool,
    liveness_endpoint: str | None,
    records: RecordsStore | None = None,
    api: client.ApiClient | None = None,
    stop_flag: asyncio.Event | None = None,
    clusterwide: bool = False,
) -> None:
    api = api or api_client(settings)
    metrics = ControllerMetrics()
    registry, _ = build_registry(settings, records or open_records(settings), api, metrics)
    kopf_settings = operator_settings(standalone=standalone)
    # Scanning (listing namespaces and CRDs as they appear) is only needed cluster-wide or for namespace
    # patterns; with named namespaces it would need RBAC to list namespaces that a namespaced install
    # does not grant. The CRD must then exist before the controller starts (Helm's crds/ sees to that).
    kopf_settings.scanning.disabled = not (clusterwide or any(ch in ns for ns in namespaces for ch in "*?[!"))
    metrics_server = serve_metrics(
        metrics, settings.controller_metrics_port, settings.controller_metrics_host
    )
    try:
        await kopf.operator(
            registry=registry,
            settings=kopf_settings,
            namespaces=[] if clusterwide else namespaces,
            clusterwide=clusterwide,
            standalone=standalone,
            liveness_endpoint=liveness_endpoint,
            stop_flag=stop_flag,
        )
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
