"""The whole trainer run on the embedded stores: the happy path and every kind of bad input.

Each bad input must end with a clear error in agent_logs, the project `failed` (when it could be claimed),
the error in its metadata, and nothing left in the work dir or the bucket.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import torch
from PIL import Image
from torchvision import models

from tests.conftest import seed_project
from tests.support.datasets import DatasetFactory, layout_members, png_bytes
from training_agent.core.errors import EXIT_FAILED, EXIT_INVALID_INPUT, EXIT_OK
from training_agent.core.records import RecordsStore
from training_agent.core.settings import Settings
from training_agent.core.storage import ObjectStorage
from training_agent.trainer.pipeline import RunResult, TrainingRun


def run(project_id: Any, settings: Settings, records: RecordsStore, **kwargs: Any) -> RunResult:
    return TrainingRun(
        project_id,
        settings=settings,
        records=records,
        storage=ObjectStorage(settings),
        upload_retry_delay_s=0,
        **kwargs,
    ).execute()


def bucket_files(settings: Settings, folder: str) -> list[Path]:
    root = settings.resolved_local_bucket_dir / folder
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def assert_nothing_left(settings: Settings) -> None:
    assert list(settings.work_dir.iterdir()) == [] if settings.work_dir.exists() else True
    assert bucket_files(settings, "models") == []
    assert bucket_files(settings, "checkpoints") == []


def test_trains_and_publishes(settings: Settings, records: RecordsStore, datasets: DatasetFactory) -> None:
    project = seed_project(records, str(datasets.shapes()), name="My Project / v2", metadata={"seed": 1})

    result = run(project.id, settings, records)

    assert result.succeeded, result.error
    assert result.exit_code == EXIT_OK
    stored = records.get_project(project.id)
    assert stored is not None and stored.status == "pending_evaluation"
    assert stored.updated_at is not None and stored.created_at is not None
    assert stored.updated_at > stored.created_at
    assert stored.metadata["preferred_model"] == "resnet18"  # metadata kept as it was

    [model] = records.list_models(project.id)
    assert model.name == "My Project / v2_model"
    assert model.framework == "pytorch"
    assert model.gcs_url.endswith("/models/My_Project_v2_model.pth")
    meta = model.metadata
    assert meta["architecture"] == "resnet18" and meta["num_classes"] == 2
    assert meta["class_to_idx"] == {"circle": 0, "square": 1}
    assert [h["epoch"] for h in meta["history"]] == [1]
    for key in ("val_accuracy", "test_accuracy", "training_seconds", "images_per_second", "learning_rate"):
        assert isinstance(meta[key], float), key
    assert meta["dataset"]["images"] == {"train": 16, "val": 8, "test": 8}

    # The uploaded file is a state_dict that loads into the same architecture with the new head.
    state = torch.load(Path(model.gcs_url.removeprefix("file://")), weights_only=True)
    net = models.resnet18(num_classes=2)
    net.load_state_dict(state)

    # Test metrics, and the sidecar beside the weights with what the evaluation agent needs.
    test = meta["test_metrics"]
    assert set(test) == {"accuracy", "balanced_accuracy", "macro_f1", "per_class", "confusion_matrix"}
    assert set(test["per_class"]) == {"circle", "square"}
    assert sum(map(sum, test["confusion_matrix"])) == 8
    assert meta["test_accuracy"] == test["accuracy"] and meta["test_macro_f1"] == test["macro_f1"]
    assert meta["best_epoch"] == 1 and meta["seed"] == 1 and meta["epochs_run"] == 1
    for key in ("data_wait_s", "compute_s", "images_per_s", "peak_memory_mib"):
        assert isinstance(meta["history"][0][key], float | int), key
    sidecar = json.loads(Path(meta["sidecar_url"].removeprefix("file://")).read_text())
    assert meta["sidecar_url"].endswith("/models/My_Project_v2_model.json")
    assert sidecar["class_to_idx"] == {"circle": 0, "square": 1}
    assert sidecar["architecture"] == "resnet18" and sidecar["image_size"] == meta["image_size"]
    assert sidecar["normalization"]["mean"] == [0.485, 0.456, 0.406]
    assert sidecar["model_url"] == model.gcs_url
    assert bucket_files(settings, "checkpoints") == []  # removed once the run is recorded

    # The pictures beside the model: valid PNGs, linked from the row's metadata and the sidecar.
    for key, suffix in (("curves_url", "_curves.png"), ("confusion_url", "_confusion.png")):
        assert meta[key].endswith(f"/models/My_Project_v2{suffix}") and sidecar[key] == meta[key]
        with Image.open(Path(meta[key].removeprefix("file://"))) as picture:
            assert picture.format == "PNG" and picture.width > 300
    # The recipe and every value it chose, and what the project set.
    assert meta["recipe"]["name"] == "seed" and meta["recipe"]["family"] == "resnet"
    assert {"epochs", "image_size", "batch_size"} <= set(meta["recipe"]["set_by_project"])
    assert meta["recipe"]["chosen"]["lr_warmup_epochs"] == 0.1
    assert meta["architecture_kwargs"] == {} and meta["optimizer"] == "adam"

    messages = [log.message for log in reversed(records.recent_logs(project.id))]
    assert messages[0] == "Training initiated"
    assert any(m.startswith("Smoke check passed") for m in messages)
    assert any(m.startswith("Dataset structure: 2 classes") for m in messages)
    assert any(m.startswith("Epoch 1/1: train_loss=") for m in messages)
    # The run's one closing row: the seed's completion message, naming the project, the model, its accuracy.
    assert messages[-1].startswith("Training complete for project My Project / v2. Model uploaded to ")
    assert messages[-1].endswith(". Evaluation Agent can now begin.") and "test accuracy" in messages[-1]
    assert sum(m.startswith("Training complete for project") for m in messages) == 1
    assert {log.log_level for log in records.recent_logs(project.id)} == {"info"}
    assert list(settings.work_dir.iterdir()) == []


def test_auto_recipe_with_lr_find_on_imbalanced_classes(
    settings: Settings, records: RecordsStore, datasets: DatasetFactory
) -> None:
    """recipe auto picks what the project left open (the project's epochs and size stay), the range test
    picks the rate, and 3x more images of one class turn on the class-weighted loss; logged and recorded."""
    archive = datasets.shapes(per_class=(24, 4, 4))
    project = seed_project(records, str(archive), metadata={"recipe": "auto", "lr_find": True, "seed": 2})
    # Drop two thirds of one class's training images: 24 against 8.
    with zipfile.ZipFile(archive) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    square = sorted(n for n in members if "/train/" in f"/{n}" and "square" in n and not n.endswith("/"))
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in members.items():
            if name not in square[8:]:
                zf.writestr(name, data)

    result = run(project.id, settings, records)

    assert result.succeeded, result.error
    meta = result.metrics
    recipe = meta["recipe"]
    assert recipe["name"] == "auto" and recipe["family"] == "resnet"
    assert {"epochs", "image_size", "batch_size"} <= set(recipe["set_by_project"])  # the fast test options
    assert recipe["chosen"]["optimizer"] == "adamw" and recipe["chosen"]["class_weighted_loss"] is True
    assert meta["image_size"] == 16 and meta["optimizer"] == "adamw"
    assert meta["lr_find"]["steps"] > 0 and meta["learning_rate"] == meta["lr_find"]["learning_rate"]
    messages = [log.message for log in records.recent_logs(project.id)]
    assert any(m.startswith("Recipe auto (resnet family): 16 px, batch 8, adamw") for m in messages)
    assert any("imbalanced (largest/smallest 3.0x)" in m for m in messages)
    assert any(m.startswith("Learning-rate range test") for m in messages)


def test_claimed_run_requires_training_status(
    settings: Settings, records: RecordsStore, datasets: DatasetFactory
) -> None:
    project = seed_project(records, str(datasets.shapes()))
    result = run(project.id, settings, records, claimed=True)
    assert not result.succeeded and "not 'training'" in result.error["message"]  # type: ignore[index]
    assert records.get_project(project.id).status == "pending_training"  # type: ignore[union-attr]


def test_unknown_project(settings: Settings, records: RecordsStore) -> None:
    missing = uuid4()
    result = run(missing, settings, records)
    assert not result.succeeded and result.status is None
    assert result.exit_code == EXIT_INVALID_INPUT
    assert f"No project with id {missing}" in result.error["message"]  # type: ignore[index]


@pytest.mark.parametrize("status", ["pending_evaluation", "training", "failed", "pending_dataset"])
def test_project_not_pending_training_is_left_alone(
    settings: Settings, records: RecordsStore, datasets: DatasetFactory, status: str
) -> None:
    project = seed_project(records, str(datasets.shapes()), status=status)
    result = run(project.id, settings, records)
    assert not result.succeeded and result.exit_code == EXIT_INVALID_INPUT
    assert f"is in status {status!r}, not 'pending_training'" in result.error["message"]  # type: ignore[index]
    # Another agent's state is never overwritten: the status stays, the refusal is logged.
    assert records.get_project(project.id).status == status  # type: ignore[union-attr]
    [log] = records.recent_logs(project.id)
    assert log.log_level == "error" and log.message.startswith("Training not started")
    assert_nothing_left(settings)


def _missing_dataset_row(records: RecordsStore, datasets: DatasetFactory) -> Any:
    return seed_project(records, None)


BadCase = Callable[[DatasetFactory], str]

BAD_INPUTS: dict[str, tuple[BadCase, dict[str, Any], str, str]] = {
    # name: (dataset url builder, metadata, failing step, text the error must contain)
    "malformed gs url": (lambda d: "gs://Bad_Bucket!/x.zip", {}, "download", "not a valid bucket name"),
    "gs url without object": (lambda d: "gs://bucket-only", {}, "download", "not an object"),
    "unsupported scheme": (lambda d: "s3://bucket/data.zip", {}, "download", "Unsupported URL scheme 's3'"),
    "object missing": (lambda d: str(d.folder / "nope.zip"), {}, "download", "does not exist"),
    "not a zip": (lambda d: str(d.not_a_zip()), {}, "extract", "not a zip archive"),
    "zip slip": (
        lambda d: str(d.zip([*layout_members(), ("../evil.png", png_bytes())])),
        {},
        "extract",
        "unsafe path",
    ),
    "absolute member": (
        lambda d: str(d.zip([*layout_members(), ("/tmp/evil.png", png_bytes())])),
        {},
        "extract",
        "unsafe path",
    ),
    "symlink member": (lambda d: str(d.with_symlink()), {}, "extract", "symbolic link"),
    "zip bomb bytes": (lambda d: str(d.bomb(megabytes=8)), {}, "extract", "TRAINING_AGENT_MAX_DATASET_BYTES"),
    "zip bomb members": (
        lambda d: str(d.zip(layout_members(per_class=40))),
        {},
        "extract",
        "TRAINING_AGENT_MAX_DATASET_FILES",
    ),
    "missing val": (
        lambda d: str(d.zip(layout_members(splits=("train", "test")))),
        {},
        "validate_dataset",
        "missing the val/",
    ),
    "missing test": (
        lambda d: str(d.zip(layout_members(splits=("train", "val")))),
        {},
        "validate_dataset",
        "test/",
    ),
    "one class": (
        lambda d: str(d.zip(layout_members(classes=("cat",)))),
        {},
        "validate_dataset",
        "at least 2",
    ),
    "classes differ": (
        lambda d: str(
            d.zip(
                [
                    *layout_members(splits=("train", "test")),
                    *layout_members(classes=("cat", "bird"), splits=("val",)),
                ]
            )
        ),
        {},
        "validate_dataset",
        "missing in val/: ['dog']; not in train/: ['bird']",
    ),
    "empty class": (
        lambda d: str(
            d.zip(
                [
                    *[m for m in layout_members() if not m[0].startswith("test/dog/")],
                    ("test/dog/", b""),
                ]
            )
        ),
        {},
        "validate_dataset",
        "test/dog",
    ),
    "too many corrupt images": (
        lambda d: str(
            d.zip(
                [
                    *layout_members(per_class=4),
                    *[(f"train/cat/bad{i}.jpg", b"not really a jpeg") for i in range(6)],
                ]
            )
        ),
        {},
        "validate_dataset",
        "6 of 30 files (20.0%) are not readable images",
    ),
    "unknown model": (
        lambda d: str(d.shapes()),
        {"preferred_model": "resnet19"},
        "validate_config",
        "resnet18",
    ),
    "zero epochs": (lambda d: str(d.shapes()), {"epochs": 0}, "validate_config", "metadata.epochs"),
    "negative batch size": (
        lambda d: str(d.shapes()),
        {"batch_size": -4},
        "validate_config",
        "metadata.batch_size",
    ),
    "zero learning rate": (
        lambda d: str(d.shapes()),
        {"learning_rate": 0},
        "validate_config",
        "metadata.learning_rate",
    ),
    "epochs not a number": (
        lambda d: str(d.shapes()),
        {"epochs": "ten"},
        "validate_config",
        "metadata.epochs",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS), ids=lambda c: c.replace(" ", "-"))
def test_bad_input_fails_cleanly(
    tmp_path: Path, records: RecordsStore, datasets: DatasetFactory, case: str
) -> None:
    from tests.conftest import make_settings

    build, metadata, step, text = BAD_INPUTS[case]
    settings = make_settings(tmp_path, max_dataset_bytes=4 * 1024 * 1024, max_dataset_files=100)
    project = seed_project(records, build(datasets), metadata={**metadata, "original": "kept"})

    result = run(project.id, settings, records)

    assert not result.succeeded
    assert result.exit_code == EXIT_INVALID_INPUT
    stored = records.get_project(project.id)
    assert stored is not None and stored.status == "failed"
    error = stored.metadata["error"]
    assert error["step"] == step, error
    assert text in error["message"], error["message"]
    assert "Traceback" in error["traceback"]
    assert stored.metadata["original"] == "kept"
    errors = [log for log in records.recent_logs(project.id) if log.log_level == "error"]
    assert len(errors) == 1 and text in errors[0].message
    # The run's one closing row names the project and the step.
    assert errors[0].message.startswith(f"Training failed for project Demo project at step {step}: ")
    assert_nothing_left(settings)
    assert not (tmp_path / "evil.png").exists() and not Path("/tmp/evil.png").exists()


def test_missing_dataset_row(settings: Settings, records: RecordsStore, datasets: DatasetFactory) -> None:
    project = _missing_dataset_row(records, datasets)
    result = run(project.id, settings, records)
    stored = records.get_project(project.id)
    assert stored is not None and stored.status == "failed"
    assert stored.metadata["error"]["step"] == "load_dataset"
    assert "no dataset row" in stored.metadata["error"]["message"]
    assert result.exit_code == EXIT_INVALID_INPUT


def test_few_corrupt_images_are_skipped_with_a_warning(
    tmp_path: Path, records: RecordsStore, datasets: DatasetFactory
) -> None:
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, max_bad_image_fraction=0.2)
    url = datasets.zip(
        [
            *layout_members(per_class=4),
            ("train/cat/broken.png", b"\x89PNG truncated"),
            ("val/dog/notes.txt", b"hello"),
        ]
    )
    project = seed_project(records, str(url))
    result = run(project.id, settings, records)
    assert result.succeeded, result.error
    warnings = [log for log in records.recent_logs(project.id) if log.log_level == "warning"]
    [skipped] = [log for log in warnings if log.message.startswith("Skipped")]
    assert skipped.message == "Skipped 1 unreadable image(s): train/cat/broken.png (not an image)"
    assert [item["path"] for item in skipped.metadata["skipped"]] == ["train/cat/broken.png"]
    # notes.txt is not an image at all: ignored, never counted as a bad image.
    assert result.metrics["dataset"]["skipped_files"] == 1


def test_unexpected_error_is_recorded_with_traceback(
    settings: Settings, records: RecordsStore, datasets: DatasetFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr("training_agent.trainer.pipeline.Fitter.fit", explode)
    project = seed_project(records, str(datasets.shapes()))
    result = run(project.id, settings, records)
    stored = records.get_project(project.id)
    assert stored is not None and stored.status == "failed"
    assert stored.metadata["error"]["message"] == "ZeroDivisionError: boom"
    assert stored.metadata["error"]["step"] == "train"
    assert "explode" in stored.metadata["error"]["traceback"]
    assert result.exit_code == EXIT_FAILED
    assert_nothing_left(settings)


def test_upload_is_retried_then_succeeds(
    settings: Settings, records: RecordsStore, datasets: DatasetFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training_agent.core.errors import StorageError

    calls: list[str] = []
    real_upload = ObjectStorage.upload

    def flaky(self: ObjectStorage, src: Path, url: str, **kwargs: Any) -> Any:
        if url.endswith(".pth") and "/models/" in url:
            calls.append(url)
            if len(calls) == 1:
                raise StorageError("503 Service Unavailable")
        return real_upload(self, src, url, **kwargs)

    monkeypatch.setattr(ObjectStorage, "upload", flaky)
    project = seed_project(records, str(datasets.shapes()))
    result = run(project.id, settings, records)
    assert result.succeeded, result.error
    assert len(calls) == 2
    uploaded = [log for log in records.recent_logs(project.id) if log.message == "Model uploaded"]
    assert uploaded[0].metadata["attempts"] == 2


def test_upload_failing_every_time_fails_the_run(
    settings: Settings, records: RecordsStore, datasets: DatasetFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training_agent.core.errors import StorageError

    real_upload = ObjectStorage.upload

    def broken(self: ObjectStorage, src: Path, url: str, **kwargs: Any) -> Any:
        if "/checkpoints/" in url:  # only the model's upload is refused
            return real_upload(self, src, url, **kwargs)
        raise StorageError("403 Forbidden")

    monkeypatch.setattr(ObjectStorage, "upload", broken)
    project = seed_project(records, str(datasets.shapes()))
    run(project.id, settings, records)
    stored = records.get_project(project.id)
    assert stored is not None and stored.status == "failed"
    assert stored.metadata["error"]["step"] == "upload"
    assert f"failed {settings.upload_attempts} times" in stored.metadata["error"]["message"]
    assert records.list_models(project.id) == []


def test_failed_model_row_removes_the_upload(
    settings: Settings, records: RecordsStore, datasets: DatasetFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training_agent.core.errors import RecordsError

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RecordsError("insert refused")

    monkeypatch.setattr(type(records), "insert_model", refuse)
    project = seed_project(records, str(datasets.shapes()))
    run(project.id, settings, records)
    stored = records.get_project(project.id)
    assert stored is not None and stored.status == "failed" and stored.metadata["error"]["step"] == "record"
    assert_nothing_left(settings)
