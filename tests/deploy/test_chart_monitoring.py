"""Monitoring in the chart: the controller's metrics port in its Deployment and Service, LOG_FORMAT, the
optional ServiceMonitors (they must select the Services and name their ports), and the Grafana dashboard,
whose every metric is one the API or the controller exports (and the README lists)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from unittest import mock

import kubernetes_validate
import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_settings
from tests.deploy.conftest import CHART, NAMESPACE, REPO, Rendered, render, run_helm, template_args
from tests.deploy.test_chart import NEWEST, OLDEST, _container, validate_object
from training_agent.api.main import create_app
from training_agent.controller.metrics import ControllerMetrics
from training_agent.core.settings import Settings

DASHBOARD = CHART / "dashboards" / "training-agent.json"
MONITORING = (
    "--set",
    "metrics.serviceMonitor.enabled=true",
    "--set",
    "metrics.grafanaDashboard.enabled=true",
)


def settings_of(rendered: Rendered, configmap: str = "-config") -> Settings:
    with mock.patch.dict(os.environ, rendered.get("ConfigMap", configmap)["data"]):
        return Settings()


def test_the_controller_serves_metrics_on_its_port(helm: str) -> None:
    rendered = render(helm, "defaults")
    assert rendered.of_kind("ServiceMonitor") == []
    assert not [c for c in rendered.of_kind("ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]
    settings = settings_of(rendered)
    assert (settings.controller_metrics_host, settings.controller_metrics_port) == ("0.0.0.0", 9090)
    controller = _container(rendered.pod_specs()["ta-training-agent-controller"], "controller")
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in controller["ports"]
    service = rendered.get("Service", "-controller")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert settings.log_format == "text"


def test_log_format_reaches_the_control_plane_and_the_trainers(helm: str) -> None:
    rendered = render(helm, "defaults", OLDEST, "--set", "logFormat=json", "--set", "logLevel=WARNING")
    for configmap in ("-config", "-trainer-env"):
        settings = settings_of(rendered, configmap)
        assert (settings.log_format, settings.log_level) == ("json", "WARNING"), configmap


@pytest.mark.parametrize(
    "bad",
    [("--set", "logFormat=yaml"), ("--set", "metrics.serviceMonitor.enable=true")],
    ids=["format", "typo"],
)
def test_bad_monitoring_values_are_refused(helm: str, bad: tuple[str, str]) -> None:
    done = run_helm(helm, *template_args("defaults", OLDEST, bad))
    assert done.returncode != 0 and "values don't meet the specifications of the schema" in done.stderr


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_service_monitors_select_the_services_and_their_ports(helm: str, version: str) -> None:
    rendered = render(
        helm, "defaults", version, *MONITORING, "--set", "metrics.serviceMonitor.labels.release=kps"
    )
    monitors = rendered.of_kind("ServiceMonitor")
    assert sorted(m["metadata"]["name"] for m in monitors) == [
        "ta-training-agent-api",
        "ta-training-agent-controller",
    ]
    for obj in rendered.objects:
        if obj["kind"] != "ServiceMonitor":  # no schema of the Prometheus Operator's CRD here
            validate_object(obj, version)
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "kps"
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        wanted = monitor["spec"]["selector"]["matchLabels"]
        [service] = [
            s for s in rendered.of_kind("Service") if wanted.items() <= s["metadata"]["labels"].items()
        ]
        [endpoint] = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics" and endpoint["interval"] == "30s"
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        # The Service reaches the pods that serve the metrics.
        [deployment] = [
            d
            for d in rendered.of_kind("Deployment")
            if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        target = next(p["targetPort"] for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
        assert target in {p["name"] for p in container["ports"]}


def exported_metric_names(tmp_path: Path) -> set[str]:
    """The metric names both components export (counters with their `_total`), from their own registries."""
    app = create_app(make_settings(tmp_path))
    with TestClient(app) as client:
        client.get("/health")  # the instrumentator's metrics join the registry with the first request
    registries = (app.state.metrics.registry, ControllerMetrics().registry)
    return {
        metric.name + ("_total" if metric.type == "counter" else "")
        for registry in registries
        for metric in registry.collect()
    }


def test_the_dashboard_shows_only_exported_metrics_and_the_readme_lists_them(
    helm: str, tmp_path: Path
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = exported_metric_names(tmp_path)
    assert {"http_requests_total", "training_agent_runs_finished_total"} <= exported
    used = {
        re.sub(r"_(bucket|count|sum)$", "", name)
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in re.findall(r"\b(?:training_agent|http)_[a-z_]+", target["expr"])
    }
    assert used - exported == set()
    # Every run and controller metric is on the dashboard.
    assert {n for n in exported if n.startswith("training_agent_")} <= used
    readme = (REPO / "README.md").read_text()
    assert {n for n in exported if f"`{n}`" not in readme} == set(), "metrics missing from the README"
    # The chart ships the file as it is.
    rendered = render(helm, "defaults", OLDEST, *MONITORING)
    config = rendered.get("ConfigMap", "-dashboard")
    assert json.loads(config["data"]["training-agent.json"]) == dashboard
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    kubernetes_validate.validate(config, OLDEST, strict=True)
