"""The corpus through the HTTP API with the local executor and the pre-flight on: every accepted zip passes
the start's pre-flight, and one of each way of reading a zip ends `pending_evaluation`; the layout refusals
that the zip's listing shows are answered 400 at the start, the project `failed` with the reason, and no
trainer is ever started."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_settings, seed_project
from tests.datasets_corpus.layouts import ZIPS
from tests.datasets_corpus.test_layout_corpus import E2E_ACCEPTED
from training_agent.api.main import create_app
from training_agent.api.queries import check_dataset
from training_agent.core.records import Project, RecordsStore, open_records
from training_agent.core.settings import Settings
from training_agent.core.storage import ObjectStorage

START = "/agents/training/start"
# Refusals the start's pre-flight sees in the central directory alone (no image is decoded there).
PREFLIGHT_REFUSED = [
    "dot class folder",
    "missing val",
    "images loose in train",
    "file and folder at one path",
    "duplicate members",
    "name over 255 bytes",
]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, RecordsStore, Settings]]:
    settings = make_settings(tmp_path, preflight=True, max_concurrent_runs=2, precision="fp32")
    records = open_records(settings)
    with TestClient(create_app(settings, records=records), raise_server_exceptions=False) as client:
        yield client, records, settings


def _project(tmp_path: Path, records: RecordsStore, name: str) -> Project:
    folder = tmp_path / "zips" / name.replace(" ", "_").replace(",", "")
    folder.mkdir(parents=True)
    case = ZIPS[name]
    return seed_project(records, str(case.build(folder)), metadata={"seed": 3, **case.metadata})


# Trained through the API (trainer processes): one case for each way of reading the zip. Every accepted
# case is trained in-process by test_layout_corpus.test_end_to_end_accepted; here each one passes the
# start's pre-flight, and these go all the way through the HTTP start and the local executor.
THROUGH_THE_API = ["aliases, wrapper, junk, mixed formats", "cp437 names", "zip inside a zip"]


def test_the_preflight_accepts_every_accepted_zip(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)  # no server: check_dataset is the start's pre-flight, without a start
    records = open_records(settings)
    storage = ObjectStorage(settings)
    for name in E2E_ACCEPTED:
        project = _project(tmp_path, records, name)
        check = check_dataset(project.id, records, storage, settings)
        assert check.ok, (name, check.reason)
        if check.nested_zip is None:
            assert len(check.classes) == len(ZIPS[name].classes), (name, check.classes)


@pytest.mark.slow
def test_accepted_zips_through_the_api(
    tmp_path: Path, api: tuple[TestClient, RecordsStore, Settings]
) -> None:
    client, records, _settings = api
    assert all(name in E2E_ACCEPTED and not ZIPS[name].settings for name in THROUGH_THE_API)
    projects = {name: _project(tmp_path, records, name) for name in THROUGH_THE_API}
    for name, project in projects.items():
        answer = client.post(START, json={"project_id": str(project.id)})
        assert answer.status_code == 200, (name, answer.json())
    deadline = time.monotonic() + 600
    pending = dict(projects)
    while pending and time.monotonic() < deadline:
        for name, project in list(pending.items()):
            stored = records.get_project(project.id)
            if stored is not None and stored.status != "training":
                assert stored.status == "pending_evaluation", (name, stored.metadata.get("error"))
                del pending[name]
        time.sleep(0.2)
    assert not pending, f"still training: {sorted(pending)}"
    for name, project in projects.items():
        [model] = records.list_models(project.id)
        assert sorted(model.metadata["class_to_idx"]) == sorted(ZIPS[name].classes)
        messages = [log.message for log in records.recent_logs(project.id, limit=200)]
        assert any(m.startswith("Dataset pre-flight") for m in messages), name


@pytest.mark.parametrize("name", PREFLIGHT_REFUSED)
def test_layout_refusals_are_answered_at_the_start(
    tmp_path: Path, api: tuple[TestClient, RecordsStore, Settings], name: str
) -> None:
    client, records, _settings = api
    project = _project(tmp_path, records, name)
    answer = client.post(START, json={"project_id": str(project.id)})
    assert answer.status_code == 400
    refused = ZIPS[name].refused
    assert refused is not None and refused in answer.json()["detail"]
    stored = records.get_project(project.id)
    assert stored is not None and stored.status == "failed"
    assert stored.metadata["error"]["step"] == "preflight" and refused in stored.metadata["error"]["message"]
    assert "Traceback" not in stored.metadata["error"]["message"]
    assert client.app.state.executor.describe(project.id) is None  # type: ignore[attr-defined]
