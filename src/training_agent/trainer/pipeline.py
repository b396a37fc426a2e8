"""The trainer's run for one project: claim → dataset → model → train → upload → record (Req 1.4-8).

Every step is named, so a failure says where it happened; every failure ends with the project `failed`, an
`error` in its metadata and an `agent_logs` row, and the run's temporary folder removed.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import torch
import torchvision

from training_agent import __version__
from training_agent.core.errors import (
    EXIT_FAILED,
    EXIT_OK,
    ConfigurationError,
    InvalidInputError,
    TrainingAgentError,
)
from training_agent.core.logs import AgentLog
from training_agent.core.records import NewModel, Project, ProjectStatus, RecordsStore
from training_agent.core.records.models import utcnow
from training_agent.core.settings import Settings
from training_agent.core.storage import ObjectStorage
from training_agent.trainer.checkpoint import save_state_dict
from training_agent.trainer.config import TrainingConfig
from training_agent.trainer.data import IMAGENET_MEAN, IMAGENET_STD, make_loader
from training_agent.trainer.dataset_checks import DatasetLayout, find_root, inspect_dataset
from training_agent.trainer.engine import FitOptions, evaluate, fit
from training_agent.trainer.fetch import download_dataset, extract_zip
from training_agent.trainer.model import build_model, check_model_name
from training_agent.trainer.publish import model_key, upload_verified

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a run did; `status` is the project's status afterwards (None if there is no such project)."""

    project_id: UUID
    succeeded: bool
    status: str | None
    exit_code: int
    model_url: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "project_id": str(self.project_id),
            "succeeded": self.succeeded,
            "status": self.status,
            "exit_code": self.exit_code,
            "model_url": self.model_url,
            "metrics": self.metrics,
            "error": self.error,
        }


def pick_device(setting: str) -> torch.device:
    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError("TRAINING_AGENT_DEVICE=cuda, but no CUDA device is available")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


class TrainingRun:
    """Train one project. `claimed=True` means the caller (the API) already moved it to `training`."""

    def __init__(
        self,
        project_id: UUID,
        *,
        settings: Settings,
        records: RecordsStore,
        storage: ObjectStorage,
        claimed: bool = False,
        upload_retry_delay_s: float = 2.0,
    ) -> None:
        self.project_id = project_id
        self.settings = settings
        self.records = records
        self.storage = storage
        self.claimed = claimed
        self.upload_retry_delay_s = upload_retry_delay_s
        self.step = "load_project"
        self.log = AgentLog(records, project_id, settings.agent_name)

    def _enter(self, step: str) -> None:
        self.step = step
        logger.debug("step %s", step)

    # -- claim ------------------------------------------------------------------------------------------
    def _claim(self) -> Project:
        project = self.records.get_project(self.project_id)
        if project is None:
            # agent_logs.project_id references projects(id): an unknown id can only be logged without it.
            self.log = AgentLog(self.records, None, self.settings.agent_name)
            raise InvalidInputError(f"No project with id {self.project_id}")
        expected = ProjectStatus.TRAINING if self.claimed else ProjectStatus.PENDING_TRAINING
        if project.status != expected.value:
            raise InvalidInputError(
                f"Project {self.project_id} is in status {project.status!r}, not {expected.value!r}; "
                "it was left unchanged"
            )
        if self.claimed:
            return project
        moved = self.records.transition_project(
            self.project_id,
            from_status=ProjectStatus.PENDING_TRAINING.value,
            to_status=ProjectStatus.TRAINING.value,
        )
        if moved is None:
            raise InvalidInputError(f"Project {self.project_id} was claimed by another worker meanwhile")
        return moved

    # -- the run ----------------------------------------------------------------------------------------
    def execute(self) -> RunResult:
        try:
            project = self._claim()
        except TrainingAgentError as exc:
            return self._rejected(exc)
        try:
            self.settings.work_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(
                dir=self.settings.work_dir, prefix=f"run-{self.project_id}-"
            ) as tmp:
                return self._train(project, Path(tmp))
        except Exception as exc:  # noqa: BLE001 - every failure must end as a `failed` project
            return self._fail(exc)
        except BaseException as exc:  # interrupted: record it, then let the interruption through
            self._fail(exc)
            raise

    def _train(self, project: Project, tmp: Path) -> RunResult:
        # Claimed runs were already announced as "Training initiated" by whoever claimed them (the API).
        announcement = "Trainer started" if self.claimed else "Training initiated"
        self.log.info(announcement, project_name=project.name, metadata=project.metadata, pid=os.getpid())
        self._enter("load_dataset")
        dataset = self.records.latest_dataset(self.project_id)
        if dataset is None or not dataset.gcs_url:
            raise InvalidInputError(
                f"Project {self.project_id} has no dataset row with a gcs_url; the dataset agent must "
                "register the zipped dataset first"
            )
        self._enter("validate_config")
        config = TrainingConfig.from_metadata(project.metadata)
        check_model_name(config.preferred_model)

        self._enter("download")
        archive = download_dataset(self.storage, dataset.gcs_url, tmp)
        self.log.info("Dataset downloaded", url=dataset.gcs_url, bytes=archive.stat().st_size)
        self._enter("extract")
        extract_zip(
            archive,
            tmp / "data",
            max_bytes=self.settings.max_dataset_bytes,
            max_files=self.settings.max_dataset_files,
        )
        archive.unlink()
        self._enter("validate_dataset")
        layout = inspect_dataset(
            find_root(tmp / "data"), max_bad_fraction=self.settings.max_bad_image_fraction
        )
        self._log_layout(layout)

        self._enter("build_model")
        device = pick_device(self.settings.device)
        weights_file = None
        if config.weights_url:
            weights_file = tmp / "weights.pth"
            self.storage.download(config.weights_url, weights_file)
        model = build_model(
            config.preferred_model,
            len(layout.classes),
            pretrained=config.pretrained,
            weights_file=weights_file,
        ).to(device)

        self._enter("train")
        started = time.perf_counter()
        metrics = self._fit_and_test(model, layout, config, device)
        metrics["training_seconds"] = round(time.perf_counter() - started, 3)

        self._enter("save")
        weights = save_state_dict(model, tmp / "model.pth")
        self._enter("upload")
        url = self.storage.model_url(model_key(project.name, self.project_id))
        attempts = upload_verified(
            self.storage,
            weights,
            url,
            attempts=self.settings.upload_attempts,
            retry_delay_s=self.upload_retry_delay_s,
        )
        self.log.info("Model uploaded", model_url=url, bytes=weights.stat().st_size, attempts=attempts)
        self._enter("record")
        return self._record(project, url, config, layout, metrics, device)

    def _log_layout(self, layout: DatasetLayout) -> None:
        summary = layout.summary()
        self.log.info(
            f"Dataset structure: {summary['num_classes']} classes, "
            + ", ".join(f"{split} {n} images" for split, n in summary["images"].items()),
            **summary,
        )
        if layout.skipped:
            self.log.warning(
                f"Skipped {len(layout.skipped)} files that are not readable images",
                skipped=[{"path": p, "reason": why} for p, why in layout.skipped[:100]],
            )

    def _fit_and_test(
        self, model: torch.nn.Module, layout: DatasetLayout, config: TrainingConfig, device: torch.device
    ) -> dict[str, Any]:
        generator = None
        if config.seed is not None:
            torch.manual_seed(config.seed)
            generator = torch.Generator().manual_seed(config.seed)
        common = {
            "image_size": config.image_size,
            "batch_size": config.batch_size,
            "num_workers": self.settings.num_workers,
            "pin_memory": device.type == "cuda",
        }
        train_loader = make_loader(layout.samples["train"], shuffle=True, generator=generator, **common)  # type: ignore[arg-type]
        val_loader = make_loader(layout.samples["val"], shuffle=False, **common)  # type: ignore[arg-type]
        test_loader = make_loader(layout.samples["test"], shuffle=False, **common)  # type: ignore[arg-type]

        def on_epoch(record: dict[str, float]) -> None:
            self.log.info(
                f"Epoch {record['epoch']}/{config.epochs}: train_loss={record['train_loss']:.4f} "
                f"val_loss={record['val_loss']:.4f} val_accuracy={record['val_accuracy']:.4f}",
                **record,
                total_epochs=config.epochs,
            )

        options = FitOptions(config.epochs, config.learning_rate, self.settings.log_every_steps)
        history = fit(model, train_loader, val_loader, device, options, on_epoch)
        self._enter("evaluate")
        test = evaluate(model, test_loader, torch.nn.CrossEntropyLoss(), device)
        self.log.info(f"Test accuracy {test.accuracy:.4f}", test_loss=test.loss, test_accuracy=test.accuracy)
        train_seconds = sum(r["seconds"] for r in history)
        train_images = len(layout.samples["train"]) * config.epochs
        return {
            "history": history,
            "val_accuracy": history[-1]["val_accuracy"],
            "val_loss": history[-1]["val_loss"],
            "test_accuracy": round(test.accuracy, 6),
            "test_loss": round(test.loss, 6),
            "images_per_second": round(train_images / train_seconds, 2) if train_seconds else 0.0,
        }

    def _record(
        self,
        project: Project,
        url: str,
        config: TrainingConfig,
        layout: DatasetLayout,
        metrics: dict[str, Any],
        device: torch.device,
    ) -> RunResult:
        metadata = {
            "architecture": config.preferred_model,
            "num_classes": len(layout.classes),
            "class_to_idx": layout.class_to_idx,
            "image_size": config.image_size,
            "normalization": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD},
            "epochs": config.epochs,
            "learning_rate": config.learning_rate,
            "batch_size": config.batch_size,
            "pretrained": config.pretrained or config.weights_url is not None,
            "optimizer": "adam",
            "loss": "cross_entropy",
            **metrics,
            "device": device.type,
            "dataset": layout.summary(),
            "versions": {
                "training_agent": __version__,
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
            },
        }
        row = NewModel(
            project_id=self.project_id, name=f"{project.name}_model", gcs_url=url, metadata=metadata
        )
        try:
            model_row = self.records.insert_model(row)
        except BaseException:
            # Without its row nobody will ever find the file: remove it rather than leave an orphan.
            self.storage.delete(url)
            raise
        moved = self.records.transition_project(
            self.project_id,
            from_status=ProjectStatus.TRAINING.value,
            to_status=ProjectStatus.PENDING_EVALUATION.value,
        )
        if moved is None:
            current = self.records.get_project(self.project_id)
            self.log.warning(
                "Model recorded, but the project was no longer in 'training'; its status was left as is",
                status=current.status if current else None,
            )
        self.log.info(
            "Training completed; model ready for evaluation",
            model_id=str(model_row.id),
            model_url=url,
            val_accuracy=metrics["val_accuracy"],
            test_accuracy=metrics["test_accuracy"],
        )
        final = moved or self.records.get_project(self.project_id)
        return RunResult(
            project_id=self.project_id,
            succeeded=True,
            status=final.status if final else None,
            exit_code=EXIT_OK,
            model_url=url,
            metrics=metadata,
        )

    # -- failure paths ----------------------------------------------------------------------------------
    def _error_details(self, exc: BaseException) -> dict[str, Any]:
        message = str(exc) if isinstance(exc, TrainingAgentError) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            message = f"Interrupted ({type(exc).__name__}) during step {self.step}"
        return {
            "message": message,
            "type": type(exc).__name__,
            "step": self.step,
            "traceback": "".join(traceback.format_exception(exc)),
            "failed_at": utcnow().isoformat(),
        }

    def _rejected(self, exc: TrainingAgentError) -> RunResult:
        """Refused before claiming the project: report it, but change nothing."""
        error = {**self._error_details(exc), "exit_code": exc.exit_code}
        self.log.error(f"Training not started: {error['message']}", **error)
        current = self.records.get_project(self.project_id) if self.log.project_id else None
        return RunResult(
            self.project_id, False, current.status if current else None, exc.exit_code, error=error
        )

    def _fail(self, exc: BaseException) -> RunResult:
        exit_code = exc.exit_code if isinstance(exc, TrainingAgentError) else EXIT_FAILED
        error = {**self._error_details(exc), "exit_code": exit_code}
        self.log.error(f"Training failed at step {self.step}: {error['message']}", **error)
        status = None
        try:
            moved = self.records.transition_project(
                self.project_id,
                from_status=ProjectStatus.TRAINING.value,
                to_status=ProjectStatus.FAILED.value,
                metadata_patch={"error": error},
            )
            current = moved or self.records.get_project(self.project_id)
            status = current.status if current else None
        except Exception:
            logger.exception("Could not mark project %s as failed", self.project_id)
        return RunResult(self.project_id, False, status, exit_code, error=error)
