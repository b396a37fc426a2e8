"""google-cloud-storage against gcp-storage-emulator, and a whole run in the production shape: Supabase
records (PostgREST stand-in over PostgreSQL) and a gs:// dataset and model bucket."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage as gcs

from tests.conftest import make_settings, seed_project
from tests.support.datasets import DatasetFactory
from tests.support.services import Supabase
from training_agent.core.errors import ObjectNotFoundError
from training_agent.core.records.supabase import SupabaseRecords
from training_agent.core.storage import ObjectStorage
from training_agent.trainer.pipeline import TrainingRun

pytestmark = pytest.mark.integration

BUCKET = "automl-test-bucket"


@pytest.fixture
def bucket(gcs_emulator: str, monkeypatch: pytest.MonkeyPatch) -> gcs.Bucket:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    client = gcs.Client(project="test", credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    existing = client.lookup_bucket(BUCKET)
    if existing is not None:
        for blob in client.list_blobs(BUCKET):
            blob.delete()
        return existing
    return client.create_bucket(BUCKET)


def test_object_round_trip(bucket: gcs.Bucket, tmp_path: Path) -> None:
    storage = ObjectStorage(make_settings(tmp_path, GCP_BUCKET_NAME=BUCKET))
    src = tmp_path / "w.pth"
    src.write_bytes(b"weights" * 1000)
    url = storage.model_url("models/p_model.pth")
    assert url == f"gs://{BUCKET}/models/p_model.pth"
    assert not storage.exists(url)
    storage.upload(src, url)
    assert storage.exists(url)
    storage.download(url, tmp_path / "back.pth")
    assert (tmp_path / "back.pth").read_bytes() == src.read_bytes()
    storage.delete(url)
    assert not storage.exists(url)
    storage.delete(url)  # deleting what is gone is fine


def test_missing_object_and_bucket(bucket: gcs.Bucket, tmp_path: Path) -> None:
    storage = ObjectStorage(make_settings(tmp_path))
    with pytest.raises(ObjectNotFoundError, match=re.escape(f"gs://{BUCKET}/nope.zip does not exist")):
        storage.download(f"gs://{BUCKET}/nope.zip", tmp_path / "x")
    with pytest.raises(ObjectNotFoundError, match=re.escape("gs://no-such-bucket-here/x.zip does not exist")):
        storage.download("gs://no-such-bucket-here/x.zip", tmp_path / "x")


def test_full_run_on_supabase_and_gcs(
    bucket: gcs.Bucket, supabase: Supabase, tmp_path: Path, datasets: DatasetFactory
) -> None:
    bucket.blob("datasets/shapes.zip").upload_from_filename(str(datasets.shapes()))
    settings = make_settings(
        tmp_path, SUPABASE_URL=supabase.url, SUPABASE_KEY=supabase.key, GCP_BUCKET_NAME=BUCKET
    )
    records = SupabaseRecords(supabase.url, supabase.key)
    project = seed_project(records, f"gs://{BUCKET}/datasets/shapes.zip", name="shapes")

    result = TrainingRun(
        project.id, settings=settings, records=records, storage=ObjectStorage(settings)
    ).execute()

    assert result.succeeded, result.error
    assert result.model_url == f"gs://{BUCKET}/models/shapes_model.pth"
    assert bucket.blob("models/shapes_model.pth").exists()
    stored = records.get_project(project.id)
    assert stored is not None and stored.status == "pending_evaluation"
    [model] = records.list_models(project.id)
    assert model.gcs_url == result.model_url and model.metadata["num_classes"] == 2
    levels = [log.log_level for log in records.recent_logs(project.id)]
    assert levels and set(levels) == {"info"}


def test_missing_dataset_object_fails_the_project(
    bucket: gcs.Bucket, supabase: Supabase, tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path, SUPABASE_URL=supabase.url, SUPABASE_KEY=supabase.key, GCP_BUCKET_NAME=BUCKET
    )
    records = SupabaseRecords(supabase.url, supabase.key)
    project = seed_project(records, f"gs://{BUCKET}/datasets/missing.zip")
    result = TrainingRun(
        project.id, settings=settings, records=records, storage=ObjectStorage(settings)
    ).execute()
    assert not result.succeeded
    stored = records.get_project(project.id)
    assert stored is not None and stored.status == "failed"
    assert stored.metadata["error"]["step"] == "download"
    assert "does not exist" in stored.metadata["error"]["message"]
    assert [log.log_level for log in records.recent_logs(project.id, limit=1)] == ["error"]
