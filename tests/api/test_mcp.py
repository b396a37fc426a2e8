"""The MCP endpoint at /mcp, driven by the official SDK's own client (streamable HTTP + ClientSession)
against the real app served by uvicorn on a free port, on the embedded stores: the handshake, the tool list
and its schemas, every tool, tool errors with the HTTP routes' messages, the API key, and
wait_for_training's progress notifications over a real training run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult

from tests.api.conftest import FakeTrainers
from tests.conftest import make_settings, seed_project
from tests.support.datasets import DatasetFactory
from training_agent.api.main import create_app
from training_agent.api.server import background_server
from training_agent.core.records import RecordsStore
from training_agent.core.records.sqlite import SQLiteRecords

API_KEY = "mcp-test-key"
TOOLS = {
    "start_training": {"project_id", "callback_url"},
    "get_training_status": {"project_id", "logs"},
    "cancel_training": {"project_id"},
    "list_training_runs": {"status", "limit"},
    "get_training_logs": {"project_id", "level", "tail"},
    "wait_for_training": {"project_id", "timeout_s"},
    "check_dataset": {"project_id"},
}


@dataclass
class Served:
    url: str
    records: RecordsStore


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    settings = make_settings(tmp_path, mcp_api_key=API_KEY)
    records = SQLiteRecords(settings.resolved_database_path)
    with background_server(create_app(settings, records=records)) as url:
        yield Served(url, records)


@asynccontextmanager
async def mcp_session(served: Served, api_key: str = API_KEY) -> AsyncIterator[ClientSession]:
    """An initialized SDK client session on the server's /mcp, sending `api_key` as the bearer token."""
    headers = {"Authorization": f"Bearer {api_key}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120)) as http,
        streamable_http_client(f"{served.url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


@dataclass
class ProgressReports:
    """A progress callback for call_tool that keeps what it was sent."""

    seen: list[tuple[float, float | None, str | None]] = field(default_factory=list)

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.seen.append((progress, total, message))


def data(result: CallToolResult) -> dict[str, Any]:
    """The structured content of a successful call."""
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


def refusal(result: CallToolResult) -> tuple[str, int]:
    """The message and HTTP status of a tool error."""
    assert result.is_error
    assert isinstance(result.structured_content, dict)
    text = result.content[0]
    assert text.type == "text" and text.text == result.structured_content["detail"]
    return result.structured_content["detail"], result.structured_content["status_code"]


async def test_handshake_and_tool_list(served: Served) -> None:
    async with mcp_session(served) as session:
        info = session.server_info
        assert info is not None and info.name == "training-agent"
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert set(tools) == set(TOOLS)
    for name, arguments in TOOLS.items():
        schema = tools[name].input_schema
        assert set(schema["properties"]) == arguments, name
        assert tools[name].output_schema is not None, name
        assert tools[name].description
    assert tools["start_training"].input_schema["required"] == ["project_id"]
    assert tools["start_training"].input_schema["properties"]["project_id"]["format"] == "uuid"
    assert tools["wait_for_training"].input_schema["required"] == ["project_id"]
    assert tools["get_training_status"].input_schema["properties"]["logs"]["maximum"] == 500
    assert tools["get_training_status"].annotations is not None
    assert tools["get_training_status"].annotations.read_only_hint is True
    status_output = tools["get_training_status"].output_schema
    assert status_output is not None and {"status", "progress", "logs"} <= set(status_output["properties"])


async def test_api_key_is_required(served: Served) -> None:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "0"},
        },
    }
    accept = {"Accept": "application/json, text/event-stream"}
    async with httpx2.AsyncClient(base_url=served.url) as http:
        for auth in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {API_KEY}"}):
            response = await http.post("/mcp", json=initialize, headers={**accept, **auth})
            assert response.status_code == 401, auth
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["detail"].startswith("Missing or invalid API key")
        allowed = await http.post(
            "/mcp", json=initialize, headers={**accept, "Authorization": f"Bearer {API_KEY}"}
        )
        assert allowed.status_code == 200
        # Stateless: no stream to open with GET, no session to DELETE.
        for method in ("GET", "DELETE"):
            answer = await http.request(method, "/mcp", headers={"Authorization": f"Bearer {API_KEY}"})
            assert answer.status_code == 405, method
    # The SDK's client cannot open a session with a wrong key either: its initialize fails with the
    # transport's error, inside the task groups of the transport and the session.
    with pytest.RaisesGroup(pytest.RaisesGroup(MCPError)):
        async with mcp_session(served, api_key="wrong"):
            pass


async def test_unknown_project_is_a_tool_error_with_the_routes_message(served: Served) -> None:
    missing = str(uuid4())
    async with mcp_session(served) as session:
        for tool in ("start_training", "get_training_status", "cancel_training", "get_training_logs"):
            result = await session.call_tool(tool, {"project_id": missing})
            assert refusal(result) == (f"Project {missing} not found", 404), tool
        assert refusal(await session.call_tool("check_dataset", {"project_id": missing}))[1] == 404
        waited = await session.call_tool("wait_for_training", {"project_id": missing, "timeout_s": 1})
        assert refusal(waited) == (f"Project {missing} not found", 404)
        invalid = await session.call_tool("get_training_status", {"project_id": "not-a-uuid"})
        assert invalid.is_error


async def test_start_status_runs_logs_and_cancel(served: Served, fake_trainers: FakeTrainers) -> None:
    project = seed_project(served.records, "gs://bucket/d.zip")
    other = seed_project(served.records, None, status="pending_dataset", name="not ours")
    async with mcp_session(served) as session:
        # The route's callback check applies (no allowed hosts here), and refuses before anything changes.
        hook = {"project_id": str(project.id), "callback_url": "https://hooks.example.com/done"}
        message, code = refusal(await session.call_tool("start_training", hook))
        assert code == 400 and "TRAINING_AGENT_CALLBACK_ALLOWED_HOSTS" in message
        assert served.records.get_project(project.id).status == "pending_training"  # type: ignore[union-attr]

        started = data(await session.call_tool("start_training", {"project_id": str(project.id)}))
        assert started["run_name"] == f"tr-{project.id}" and started["status"] == "training"

        again = refusal(await session.call_tool("start_training", {"project_id": str(project.id)}))
        assert again[1] == 400 and "only projects in 'pending_training' can be started" in again[0]

        status = data(await session.call_tool("get_training_status", {"project_id": str(project.id)}))
        assert status["status"] == "training" and status["run"]["phase"] in ("Running", "Queued")
        assert status["logs"][-1]["message"] == "Training initiated"

        runs = data(await session.call_tool("list_training_runs", {}))["runs"]
        assert [run["project_id"] for run in runs] == [str(project.id)]  # not the other agent's project
        assert runs[0]["run"]["name"] == f"tr-{project.id}"
        training = data(await session.call_tool("list_training_runs", {"status": "training", "limit": 5}))
        assert len(training["runs"]) == 1
        assert data(await session.call_tool("list_training_runs", {"status": "failed"}))["runs"] == []

        cancelled = data(await session.call_tool("cancel_training", {"project_id": str(project.id)}))
        assert cancelled == {"project_id": str(project.id), "run_name": f"tr-{project.id}", "cancelled": True}
        twice = refusal(await session.call_tool("cancel_training", {"project_id": str(project.id)}))
        assert twice[1] == 409

        ended = data(await session.call_tool("wait_for_training", {"project_id": str(project.id)}))
        assert ended["timed_out"] is False and ended["status"]["status"] == "failed"

        logs = data(await session.call_tool("get_training_logs", {"project_id": str(project.id)}))
        messages = [row["message"] for row in logs["logs"]]
        assert messages[0] == "Training initiated"  # oldest first
        errors = data(
            await session.call_tool("get_training_logs", {"project_id": str(project.id), "level": "error"})
        )
        assert errors["logs"] and {row["log_level"] for row in errors["logs"]} == {"error"}
        newest = data(
            await session.call_tool("get_training_logs", {"project_id": str(project.id), "tail": 1})
        )
        assert [row["message"] for row in newest["logs"]] == messages[-1:]
    assert served.records.get_project(other.id).status == "pending_dataset"  # type: ignore[union-attr]


async def test_check_dataset_changes_nothing(served: Served, datasets: DatasetFactory) -> None:
    good = seed_project(served.records, str(datasets.shapes(classes=3)))
    flat = datasets.zip([("cat.png", b"x"), ("dog.png", b"y")])
    bad = seed_project(served.records, str(flat))
    none = seed_project(served.records, None)
    async with mcp_session(served) as session:
        checked = data(await session.call_tool("check_dataset", {"project_id": str(good.id)}))
        assert checked["ok"] is True and checked["reason"] is None
        assert len(checked["classes"]) == 3
        assert checked["images"] == {"train": 24, "val": 12, "test": 12}
        assert set(checked["images_per_class"]["train"].values()) == {8}

        refused = data(await session.call_tool("check_dataset", {"project_id": str(bad.id)}))
        assert refused["ok"] is False and refused["reason"] and refused["classes"] == []

        no_dataset = refusal(await session.call_tool("check_dataset", {"project_id": str(none.id)}))
        assert no_dataset == (
            f"Project {none.id} has no dataset with a gcs_url; register its dataset first",
            400,
        )
    for project in (good, bad):  # a check never fails a project, nor writes to its log
        assert served.records.get_project(project.id).status == "pending_training"  # type: ignore[union-attr]
        assert served.records.recent_logs(project.id) == []


async def test_wait_times_out_with_progress(served: Served, fake_trainers: FakeTrainers) -> None:
    project = seed_project(served.records, "gs://bucket/d.zip")
    reports = ProgressReports()
    async with mcp_session(served) as session:
        data(await session.call_tool("start_training", {"project_id": str(project.id)}))
        arguments: dict[str, Any] = {"project_id": str(project.id), "timeout_s": 1.5}
        result = await session.call_tool("wait_for_training", arguments, progress_callback=reports)
    waited = data(result)
    assert waited["timed_out"] is True and waited["status"]["status"] == "training"
    assert 1.5 <= waited["waited_s"] < 10
    # The fake trainer reports nothing: one notification (the first), none repeating the same value.
    assert reports.seen == [(0.0, 1.0, "training: epoch 0/1")]


@pytest.mark.slow
async def test_wait_follows_a_real_training_to_its_end(served: Served, datasets: DatasetFactory) -> None:
    project = seed_project(served.records, str(datasets.shapes()), metadata={"epochs": 2})
    reports = ProgressReports()
    async with mcp_session(served) as session:
        data(await session.call_tool("start_training", {"project_id": str(project.id)}))
        arguments: dict[str, Any] = {"project_id": str(project.id), "timeout_s": 300}
        waited = data(await session.call_tool("wait_for_training", arguments, progress_callback=reports))
        assert waited["timed_out"] is False, waited
        assert waited["status"]["status"] == "pending_evaluation", waited["status"]["error"]
        assert waited["status"]["model_url"]
        runs = data(await session.call_tool("list_training_runs", {"status": "pending_evaluation"}))
        assert [run["project_id"] for run in runs["runs"]] == [str(project.id)]
        assert runs["runs"][0]["run"]["phase"] == "Succeeded"
    values = [value for value, _, _ in reports.seen]
    assert values and values == sorted(set(values))  # strictly increasing, as MCP requires
    assert all(total == 2.0 and message for _, total, message in reports.seen)
