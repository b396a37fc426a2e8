"""The trainer's whole log survives its process: after a local run (the API's local executor starts the real
trainer) it is in the bucket beside the model, named by the models row; after a failed run it is under the
project's failure prefix, named by the project's error. LOG_FORMAT and LOG_LEVEL reach the trainer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.api.conftest import wait_for_status
from tests.conftest import make_settings, seed_project
from tests.support.datasets import DatasetFactory
from training_agent.api.main import create_app
from training_agent.core.records.sqlite import SQLiteRecords
from training_agent.core.settings import Settings


def run_through_the_api(settings: Settings, dataset_url: str, final: str) -> tuple[SQLiteRecords, Any]:
    records = SQLiteRecords(settings.resolved_database_path)
    project = seed_project(records, dataset_url)
    with TestClient(create_app(settings, records=records)) as client:
        response = client.post("/agents/training/start", json={"project_id": str(project.id)})
        assert response.status_code == 200, response.text
        wait_for_status(records, project.id, {final, "failed", "pending_evaluation"})
    stored = records.get_project(project.id)
    assert stored is not None and stored.status == final, stored.metadata if stored else None
    return records, stored


def json_lines(url: str) -> list[dict[str, Any]]:
    text = Path(url.removeprefix("file://")).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_the_log_of_a_local_run_is_beside_its_model(tmp_path: Path, datasets: DatasetFactory) -> None:
    settings = make_settings(tmp_path, LOG_FORMAT="json")
    records, project = run_through_the_api(settings, str(datasets.shapes()), "pending_evaluation")
    [model] = records.list_models(project.id)
    log_url = model.metadata["log_url"]
    assert log_url == model.gcs_url.removesuffix(".pth") + ".log"
    sidecar = json.loads(Path(model.metadata["sidecar_url"].removeprefix("file://")).read_text())
    assert sidecar["log_url"] == log_url

    lines = json_lines(log_url)  # every line a JSON object, from the first stage to the last
    assert {line["project_id"] for line in lines} == {str(project.id)}
    assert {line["run_name"] for line in lines} == {f"tr-{project.id}"}
    messages = [line["message"] for line in lines]
    assert any("Trainer started" in m for m in messages)
    assert any("Epoch 1/1" in m for m in messages)
    # The copy was completed after the run was recorded: the stages after publish are in it.
    assert any("Smoke check passed" in m for m in messages)
    assert list(settings.work_dir.iterdir()) == []  # the live file went with the run's folder


def test_the_log_of_a_failed_run_is_beside_its_error(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, LOG_FORMAT="json", LOG_LEVEL="WARNING")
    missing = (tmp_path / "nowhere" / "dataset.zip").as_uri()
    _records, project = run_through_the_api(settings, missing, "failed")
    error = project.metadata["error"]
    assert error["step"] == "download"
    prefix = f"{settings.model_store_root}/failures/tr-{project.id}/"
    assert error["log_url"].startswith(prefix) and error["log_url"].endswith("-1.log")

    lines = json_lines(error["log_url"])
    assert lines, "the failure's log is empty"
    assert {line["level"] for line in lines} <= {"WARNING", "ERROR", "CRITICAL"}  # LOG_LEVEL=WARNING
    assert any(line["message"].startswith("Training failed at step download") for line in lines)
    assert all(line["project_id"] == str(project.id) for line in lines)
    # Nothing of the run is left beside the models: the failure's log is the only object it kept.
    assert not (settings.resolved_local_bucket_dir / "models").exists() or not any(
        (settings.resolved_local_bucket_dir / "models").iterdir()
    )
