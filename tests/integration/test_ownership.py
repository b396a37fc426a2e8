"""Object ownership on both backends: the local folder and real GCS semantics (fake-gcs-server, which
enforces generation preconditions): create-only writes, generation-checked replaces, owner metadata,
listing, and the model name a project gets when another project holds its name."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage as gcs

from tests.conftest import make_settings
from training_agent.core.storage import ObjectStorage, PreconditionFailedError, owner_metadata
from training_agent.core.sweep import checkpoint_prefix
from training_agent.trainer.owner import RunOwner
from training_agent.trainer.publish import choose_model_key, model_key, own_model_key

BUCKET = "ownership-test-bucket"


@pytest.fixture(params=["local", "gcs"])
def storage(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ObjectStorage:
    if request.param == "local":
        return ObjectStorage(make_settings(tmp_path))
    url = request.getfixturevalue("fake_gcs_server")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
    client = gcs.Client(project="test", credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    if client.lookup_bucket(BUCKET) is None:
        client.create_bucket(BUCKET)
    for blob in client.list_blobs(BUCKET):
        blob.delete()
    return ObjectStorage(make_settings(tmp_path, GCP_BUCKET_NAME=BUCKET))


def _file(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / f"{uuid.uuid4().hex}.bin"
    path.write_bytes(content)
    return path


def test_create_only_and_generation_checked_replace(storage: ObjectStorage, tmp_path: Path) -> None:
    url = storage.model_url("models/a_model.pth")
    meta = owner_metadata("p1", "r1")
    first = storage.upload(_file(tmp_path, b"one"), url, metadata=meta, if_generation_match=0)
    info = storage.stat(url)
    assert info is not None and info.generation == first.generation and info.owner_project == "p1"
    assert info.owner_run == "r1" and info.size == 3
    with pytest.raises(PreconditionFailedError):
        storage.upload(_file(tmp_path, b"two"), url, metadata=meta, if_generation_match=0)
    with pytest.raises(PreconditionFailedError):
        storage.upload(_file(tmp_path, b"two"), url, if_generation_match=first.generation + 12345)
    second = storage.upload(
        _file(tmp_path, b"three"), url, metadata=meta, if_generation_match=first.generation
    )
    assert second.generation != first.generation
    storage.download(url, tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == b"three"


def test_list_and_delete(storage: ObjectStorage, tmp_path: Path) -> None:
    project = uuid.uuid4()
    prefix = checkpoint_prefix(project, "a" * 32)
    for key in (
        prefix + "checkpoint.pt",
        checkpoint_prefix(project, "b" * 32) + "checkpoint.pt",
        "models/x.pth",
    ):
        storage.upload(_file(tmp_path, b"x"), storage.model_url(key))
    assert storage.list(storage.model_url(prefix)) == [storage.model_url(prefix + "checkpoint.pt")]
    assert len(storage.list(storage.model_url("checkpoints/"))) == 2
    storage.delete(storage.model_url(prefix + "checkpoint.pt"))
    assert storage.list(storage.model_url(prefix)) == []


def test_model_name_of_a_project_whose_name_is_taken(storage: ObjectStorage, tmp_path: Path) -> None:
    ours, theirs = uuid.uuid4(), uuid.uuid4()
    # "cats/dogs" and "cats dogs" become the same safe name.
    assert model_key("cats/dogs", ours) == model_key("cats dogs", theirs) == "models/cats_dogs_model.pth"
    assert choose_model_key(storage, "cats/dogs", ours) == ("models/cats_dogs_model.pth", 0)

    taken = storage.model_url("models/cats_dogs_model.pth")
    storage.upload(
        _file(tmp_path, b"theirs"), taken, metadata=owner_metadata(theirs, "r"), if_generation_match=0
    )
    key, precondition = choose_model_key(storage, "cats/dogs", ours)
    assert key == own_model_key("cats/dogs", ours) == f"models/cats_dogs_{ours}_model.pth"
    assert precondition == 0

    # The holder itself keeps its name, and replaces exactly the generation it saw.
    info = storage.stat(taken)
    assert info is not None
    assert choose_model_key(storage, "cats dogs", theirs) == ("models/cats_dogs_model.pth", info.generation)


def test_an_object_of_unknown_owner_is_never_replaced(storage: ObjectStorage, tmp_path: Path) -> None:
    storage.upload(_file(tmp_path, b"legacy"), storage.model_url("models/old_model.pth"))
    project = uuid.uuid4()
    assert choose_model_key(storage, "old", project)[0] == own_model_key("old", project)


def test_owner_rolls_back_only_what_it_wrote(tmp_path: Path) -> None:
    """Locally (where generation-checked deletes are exact): an object replaced by somebody else after
    this run wrote it is left alone by the run's rollback."""
    settings = make_settings(tmp_path)
    storage = ObjectStorage(settings)
    project = uuid.uuid4()
    owner = RunOwner(settings, storage, project, "c" * 32)
    mine, replaced = storage.model_url("models/mine.pth"), storage.model_url("models/replaced.pth")
    owner.put(_file(tmp_path, b"1"), mine, if_generation_match=0)
    owner.put(_file(tmp_path, b"2"), replaced, if_generation_match=0)
    storage.upload(_file(tmp_path, b"somebody else"), replaced, metadata=owner_metadata(uuid.uuid4(), "z"))
    owner.discard_all()
    assert storage.stat(mine) is None
    after = storage.stat(replaced)
    assert after is not None and after.size == len(b"somebody else")
    folder = owner.work_dir
    assert folder.name.startswith(f"run-{project}-{'c' * 32}-")
    owner.close()
    assert not folder.exists()
