"""Malformed requests and configuration: every malformed body is a 422 with a readable reason (never a 500
or a 400), and an empty MCP_API_KEY is refused when the settings load."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from training_agent.core.errors import ConfigurationError
from training_agent.core.settings import Settings, load_settings

START = "/agents/training/start"
_UUID = "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"project_id": NaN}', "NaN is not a JSON number"),
        (b'{"project_id": Infinity}', "Infinity is not a JSON number"),
        # Anywhere in the body, not only in the field the schema reads.
        (b'{"project_id": "' + _UUID.encode() + b'", "x": [1, {"y": -Infinity}]}', "-Infinity is not"),
        (b'{"project_id": 1e999}', "1e999 is too large for a number"),  # Python reads it as infinity
        (b"[" * 10_000 + b"]" * 10_000, "nested too deeply"),
        (b'{"project_id": ' + b'{"a":' * 5_000 + b"1" + b"}" * 5_001, "nested too deeply"),
        (b'{"project_id": "\xff\xfe"}', "not valid UTF-8"),
        (b'{"project_id": 1' + b"0" * 5_000 + b"}", "too many digits"),
        (b'{"project_id":', "Expecting value"),
    ],
    ids=[
        "nan",
        "infinity",
        "minus-infinity-nested",
        "overflow",
        "deep-list",
        "deep-object",
        "utf8",
        "long-int",
        "cut",
    ],
)
def test_malformed_json_is_422_with_the_reason(client: TestClient, body: bytes, reason: str) -> None:
    response = client.post(START, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["type"] == "json_invalid"
    assert error["msg"].startswith("The body is not valid JSON: ") and reason in error["msg"]


def test_finite_numbers_still_reach_the_schema(client: TestClient) -> None:
    # Only the non-finite ones are refused by the parser; a plain number is the schema's to judge.
    response = client.post(
        START, content=b'{"project_id": 1.5}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "uuid_type"


def test_a_valid_body_is_unaffected(client: TestClient) -> None:
    response = client.post(
        START, content=f'{{"project_id": "{_UUID}"}}'.encode(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 404  # parsed, validated, and looked up: no such project


@pytest.mark.parametrize("value", ["", "   ", "\t\n"])
def test_empty_mcp_api_key_is_refused_when_settings_load(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    monkeypatch.setenv("MCP_API_KEY", value)
    monkeypatch.setenv("TRAINING_AGENT_DATA_DIR", str(tmp_path))
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    assert str(refused.value) == (
        "Invalid configuration: MCP_API_KEY: is set but empty: set a token, or unset it to disable "
        "authentication"
    )
    assert refused.value.exit_code == 2


def test_mcp_api_key_set_or_unset_is_accepted(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).mcp_api_key is None
    key = Settings(data_dir=tmp_path, MCP_API_KEY="s3cret").mcp_api_key
    assert key is not None and key.get_secret_value() == "s3cret"
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, MCP_API_KEY="")
