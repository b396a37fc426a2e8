"""deploy/mcp/mcp.yaml, the registration example for the AutoML system's MCP server: its paths, methods and
tool names are the ones the app serves, and its host is the Service the chart makes for the release and
namespace the README installs."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.conftest import make_settings
from tests.deploy.conftest import CHART, REPO, Rendered, run_helm
from training_agent.api import mcp_server
from training_agent.api.main import create_app

REGISTRATION = REPO / "deploy" / "mcp" / "mcp.yaml"
HOST = "training-agent-api.automl.svc.cluster.local"  # release training-agent, namespace automl


@pytest.fixture(scope="module")
def entries() -> dict[str, dict[str, Any]]:
    tools = yaml.safe_load(REGISTRATION.read_text())["tools"]
    return {entry["name"]: entry for entry in tools}


def test_the_trigger_is_the_start_and_status_routes(
    entries: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    trigger = entries["training"]
    assert trigger["trigger"]["when"] == {"column": "status", "equals": "pending_training"}
    paths = create_app(make_settings(tmp_path)).openapi()["paths"]

    start = urlsplit(trigger["request"]["url"])
    assert start.hostname == HOST and trigger["request"]["method"] == "POST"
    assert "post" in paths[start.path]
    assert trigger["request"]["body"] == {"project_id": "{{ project.id }}"}
    assert trigger["request"]["headers"]["Authorization"] == "Bearer ${MCP_API_KEY}"

    status = urlsplit(trigger["status"]["url"])
    assert status.hostname == HOST and trigger["status"]["method"] == "GET"
    assert "get" in paths[status.path.replace("{{ project.id }}", "{project_id}")]


async def test_the_mcp_endpoint_and_its_tools(entries: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    endpoint = entries["training-agent"]
    url = urlsplit(endpoint["url"])
    assert endpoint["transport"] == "streamable-http"
    assert url.hostname == HOST and url.path == mcp_server.PATH
    assert endpoint["headers"] == {"Authorization": "Bearer ${MCP_API_KEY}"}
    server = mcp_server.build_server(create_app(make_settings(tmp_path)))
    assert endpoint["tools"] == [tool.name for tool in await server.list_tools()]


def test_the_host_is_the_charts_api_service(helm: str) -> None:
    done = run_helm(helm, "template", "training-agent", str(CHART), "--namespace", "automl")
    assert done.returncode == 0, done.stderr
    services = Rendered([o for o in yaml.safe_load_all(done.stdout) if o]).of_kind("Service")
    service, namespace = HOST.split(".")[:2]
    [api] = [s for s in services if s["metadata"]["name"] == service]
    assert api["metadata"]["namespace"] == namespace
    assert [port["port"] for port in api["spec"]["ports"]] == [80]  # the URLs name no port
