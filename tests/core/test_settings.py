from __future__ import annotations

from pathlib import Path

import pytest

from training_agent.core.errors import ConfigurationError
from training_agent.core.settings import get_settings, load_settings


def test_defaults_are_embedded() -> None:
    settings = load_settings()
    assert settings.log_level == "INFO"
    assert not settings.uses_supabase
    assert settings.resolved_database_path == Path(".training-agent/records.db")
    assert settings.model_store_root.startswith("file:///")
    assert settings.upload_attempts >= 2


def test_reads_the_shared_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key_file = tmp_path / "sa.json"
    key_file.write_text("{}")
    monkeypatch.setenv("SUPABASE_URL", "https://abc.supabase.co/")
    monkeypatch.setenv("SUPABASE_KEY", "k3y-v4lue")
    monkeypatch.setenv("GCP_BUCKET_NAME", "automl-bucket")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("MCP_API_KEY", "k")
    monkeypatch.setenv("TRAINING_AGENT_NUM_WORKERS", "7")
    settings = get_settings()
    assert settings.supabase_url == "https://abc.supabase.co"
    assert settings.supabase_key is not None and settings.supabase_key.get_secret_value() == "k3y-v4lue"
    assert settings.model_store_root == "gs://automl-bucket"
    assert settings.google_application_credentials == key_file
    assert settings.log_level == "DEBUG" and settings.num_workers == 7
    assert "k3y-v4lue" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TRAINING_AGENT_MAX_DATASET_BYTES": "lots"},
            "TRAINING_AGENT_MAX_DATASET_BYTES: Input should be a valid integer",
        ),
        (
            {"TRAINING_AGENT_UPLOAD_ATTEMPTS": "1"},
            "TRAINING_AGENT_UPLOAD_ATTEMPTS: Input should be greater than or equal to 2",
        ),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL: Input should be 'DEBUG'"),
        ({"SUPABASE_URL": "abc.supabase.co", "SUPABASE_KEY": "k"}, "SUPABASE_URL: must be an http(s) URL"),
        ({"SUPABASE_URL": "https://abc.supabase.co"}, "SUPABASE_URL and SUPABASE_KEY must be set together"),
        ({"GCP_BUCKET_NAME": "gs://bucket"}, "GCP_BUCKET_NAME: must be the bare bucket name"),
        ({"GCP_BUCKET_NAME": "Bad Bucket"}, "GCP_BUCKET_NAME: is not a valid bucket name"),
        (
            {"GOOGLE_APPLICATION_CREDENTIALS": "/nope/sa.json"},
            "GOOGLE_APPLICATION_CREDENTIALS: names /nope/sa.json",
        ),
        ({"TRAINING_AGENT_DEVICE": "tpu"}, "TRAINING_AGENT_DEVICE: Input should be 'auto', 'cpu' or 'cuda'"),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert str(info.value).startswith("Invalid configuration: ")
    assert message in str(info.value)


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GCP_BUCKET_NAME", "")
    monkeypatch.setenv("SUPABASE_URL", " ")
    assert load_settings().gcp_bucket_name is None
