"""The pre-flight through the HTTP API: a dataset whose zip listing the layout rules refuse fails the project
before it is claimed — 400 with the reason, `metadata.error` of type InvalidDataset at step `preflight`, an
`error` row in agent_logs — and neither a trainer process (local executor) nor a TrainingRun (kubernetes
executor, against kmock) is ever created for it. A good dataset starts as before."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kmock
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import FakeTrainers
from tests.conftest import make_settings, seed_project
from tests.support.datasets import DatasetFactory, layout_members
from tests.support.kube import ClusterEmulator, register_crd, write_kubeconfig
from training_agent.api.main import create_app
from training_agent.core.errors import StorageError
from training_agent.core.records import Project, RecordsStore
from training_agent.core.records.sqlite import SQLiteRecords
from training_agent.core.settings import Settings
from training_agent.core.storage import ObjectStorage

START = "/agents/training/start"
RUNS = "automl.dev/v1alpha1/trainingruns"


@pytest.fixture
def api_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, preflight=True)


def _start(client: TestClient, project: Project) -> Any:
    return client.post(START, json={"project_id": str(project.id)})


def _stored(records: RecordsStore, project: Project) -> Project:
    stored = records.get_project(project.id)
    assert stored is not None
    return stored


def _declared_sizes(path: Path, size: int) -> Path:
    """The zip with every member's uncompressed size in its central directory set to `size`: a listing
    that looks like a decompression bomb without writing one."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        struct.pack_into("<L", data, at + 24, size)
        at = data.find(b"PK\x01\x02", at + 46)
    path.write_bytes(bytes(data))
    return path


def _cut(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


BAD_DATASETS: dict[str, tuple[Callable[[DatasetFactory], Path], str]] = {
    "no-train": (
        lambda d: d.zip(layout_members(splits=("val", "test"))),
        "The dataset has no train/ folder",
    ),
    "one-class": (lambda d: d.zip(layout_members(classes=("cat",))), "has 1 class folder(s)"),
    "not-a-zip": (lambda d: d.not_a_zip(), "The dataset file is not a zip archive (330 bytes)"),
    "cut-off": (lambda d: _cut(d.shapes()), "The dataset zip is cut off"),
    "bomb": (
        lambda d: _declared_sizes(d.zip(layout_members()), 30 * 1024**2),
        "looks like a decompression bomb",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_DATASETS))
def test_a_bad_dataset_fails_the_project_and_starts_nothing(
    case: str,
    client: TestClient,
    api_records: RecordsStore,
    datasets: DatasetFactory,
    fake_trainers: FakeTrainers,
) -> None:
    build, expected = BAD_DATASETS[case]
    project = seed_project(api_records, str(build(datasets)))
    response = _start(client, project)
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert expected in detail and "Traceback" not in detail

    stored = _stored(api_records, project)
    assert stored.status == "failed"
    error = stored.metadata["error"]
    assert error["message"] == detail
    assert (error["type"], error["step"], error["traceback"]) == ("InvalidDataset", "preflight", None)
    assert "training_run" not in stored.metadata  # never claimed
    assert fake_trainers.started == []
    assert client.app.state.executor.describe(project.id) is None  # type: ignore[attr-defined]
    rows = api_records.recent_logs(project.id)
    assert [(row.log_level, row.message) for row in rows] == [("error", detail)]


def test_a_missing_object_fails_the_project(
    client: TestClient, api_records: RecordsStore, tmp_path: Path, fake_trainers: FakeTrainers
) -> None:
    url = (tmp_path / "bucket" / "datasets" / "gone.zip").as_uri()
    project = seed_project(api_records, url)
    response = _start(client, project)
    assert response.status_code == 400
    assert response.json()["detail"] == (
        f"The dataset object {url} does not exist; upload it or fix the dataset's gcs_url"
    )
    assert _stored(api_records, project).status == "failed"
    assert fake_trainers.started == []


def test_a_good_dataset_starts_as_before_with_the_preflight_logged(
    client: TestClient, api_records: RecordsStore, datasets: DatasetFactory, fake_trainers: FakeTrainers
) -> None:
    project = seed_project(api_records, str(datasets.shapes(per_class=(8, 4, 4))))
    response = _start(client, project)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "training"
    assert _stored(api_records, project).status == "training"
    assert len(fake_trainers.started) == 1
    messages = [row.message for row in reversed(api_records.recent_logs(project.id))]
    assert messages[0].startswith("Dataset pre-flight passed: 2 classes, 16 train, 8 val, 8 test images, ")
    assert messages[0].endswith(" ms") and " MB uncompressed, in " in messages[0]
    assert messages[1] == "Training initiated"


def test_a_missing_val_split_passes_when_the_project_carves_one(
    client: TestClient, api_records: RecordsStore, datasets: DatasetFactory, fake_trainers: FakeTrainers
) -> None:
    dataset = str(datasets.zip(layout_members(splits=("train", "test"))))
    refused = seed_project(api_records, dataset)
    assert _start(client, refused).status_code == 400
    assert "val_fraction" in _stored(api_records, refused).metadata["error"]["message"]
    carved = seed_project(api_records, dataset, metadata={"val_fraction": 0.2})
    assert _start(client, carved).status_code == 200


def test_storage_that_cannot_be_read_now_is_503_and_the_project_waits(
    client: TestClient,
    api_records: RecordsStore,
    datasets: DatasetFactory,
    fake_trainers: FakeTrainers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = seed_project(api_records, str(datasets.shapes()))

    def unreachable(self: ObjectStorage, url: str, start: int, end: int) -> bytes:
        raise StorageError(f"Cannot read {url}: connection reset by peer")

    with monkeypatch.context() as patch:
        patch.setattr(ObjectStorage, "read_range", unreachable)
        response = _start(client, project)
    assert response.status_code == 503
    assert response.json()["detail"].startswith("The dataset could not be read to check it, try again: ")
    assert _stored(api_records, project).status == "pending_training"
    assert api_records.recent_logs(project.id) == []
    assert fake_trainers.started == []
    assert _start(client, project).status_code == 200  # once storage answers, the same start works


def test_the_preflight_can_be_turned_off(
    tmp_path: Path, api_records: RecordsStore, datasets: DatasetFactory, fake_trainers: FakeTrainers
) -> None:
    settings = make_settings(tmp_path, preflight=False)
    project = seed_project(api_records, str(datasets.not_a_zip()))
    with TestClient(create_app(settings, records=api_records)) as client:
        assert _start(client, project).status_code == 200  # the trainer will find out
    assert len(fake_trainers.started) == 1


def test_the_file_limit_setting_reaches_the_rules(
    tmp_path: Path, api_records: RecordsStore, datasets: DatasetFactory, fake_trainers: FakeTrainers
) -> None:
    settings = make_settings(tmp_path, preflight=True, max_dataset_files=5)
    project = seed_project(api_records, str(datasets.shapes()))
    with TestClient(create_app(settings, records=api_records)) as client:
        response = _start(client, project)
    assert response.status_code == 400
    assert "over the limit of 5 (TRAINING_AGENT_MAX_DATASET_FILES)" in response.json()["detail"]
    assert fake_trainers.started == []


# -- the kubernetes executor against kmock -------------------------------------------------------------------
@pytest.fixture
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    return {**kmock_options, "cls": ClusterEmulator}


@pytest.fixture
async def k8s_client(
    tmp_path: Path, kmock: kmock.KubernetesEmulator
) -> AsyncIterator[tuple[TestClient, RecordsStore]]:
    register_crd(kmock)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url).rstrip("/"), "ml")
    settings = make_settings(
        tmp_path,
        preflight=True,
        executor="kubernetes",
        kubeconfig=kubeconfig,
        namespace="ml",
        trainer_image="registry.example/trainer:1.0",
    )
    records = SQLiteRecords(settings.resolved_database_path)
    # The app runs in TestClient's thread; every call goes through to_thread so kmock's loop stays free.
    client = TestClient(create_app(settings, records=records), raise_server_exceptions=False)
    await asyncio.to_thread(client.__enter__)
    yield client, records
    await asyncio.to_thread(client.__exit__, None, None, None)


def _runs(cluster: kmock.KubernetesEmulator) -> list[Any]:
    return [key for key in cluster.objects if str(key[0]) == str(kmock.resource(RUNS))]


async def test_kubernetes_creates_no_trainingrun_for_a_bad_dataset(
    kmock: kmock.KubernetesEmulator, k8s_client: tuple[TestClient, RecordsStore], datasets: DatasetFactory
) -> None:
    client, records = k8s_client
    bad = seed_project(records, str(datasets.zip(layout_members(classes=("cat",)))))
    response = await asyncio.to_thread(_start, client, bad)
    assert response.status_code == 400, response.text
    assert _stored(records, bad).status == "failed"
    assert _runs(kmock) == []

    good = seed_project(records, str(datasets.shapes()))  # and the same API does create one for a good one
    response = await asyncio.to_thread(_start, client, good)
    assert response.status_code == 200, response.text
    assert [key[2] for key in _runs(kmock)] == [f"tr-{good.id}"]
