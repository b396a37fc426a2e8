"""The trainer's run for one project: claim → dataset → model → train → upload → record (Req 1.4-8).

Every step is named, so a failure says where it happened; every failure ends with the project `failed`, an
`error` in its metadata and an `agent_logs` row, and the run's temporary folder removed.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
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
    Interrupted,
    InvalidInputError,
    TrainingAgentError,
)
from training_agent.core.files import atomic_write
from training_agent.core.logs import AgentLog
from training_agent.core.records import NewModel, Project, ProjectStatus, RecordsStore
from training_agent.core.records.models import utcnow
from training_agent.core.runs import run_name
from training_agent.core.settings import Settings
from training_agent.core.storage import ObjectStorage
from training_agent.trainer.checkpoint import Checkpoints, checkpoint_key, save_state_dict
from training_agent.trainer.config import TrainingConfig
from training_agent.trainer.data import IMAGENET_MEAN, IMAGENET_STD, Loader, LoaderOptions, make_loaders
from training_agent.trainer.dataset_checks import DatasetLayout, find_root, inspect_dataset
from training_agent.trainer.engine import FitOptions, Fitter, evaluate, use_bf16
from training_agent.trainer.fetch import download_dataset, extract_zip
from training_agent.trainer.interrupt import StopSignal
from training_agent.trainer.metrics import classification_report, confusion_matrix
from training_agent.trainer.model import build_model, check_model_name
from training_agent.trainer.preprocess import Preprocess
from training_agent.trainer.publish import model_key, sidecar_key, upload_verified
from training_agent.trainer.verify import smoke_check

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
        stop: StopSignal | None = None,
    ) -> None:
        self.project_id = project_id
        self.settings = settings
        self.records = records
        self.storage = storage
        self.claimed = claimed
        self.upload_retry_delay_s = upload_retry_delay_s
        self.step = "load_project"
        self.log = AgentLog(records, project_id, settings.agent_name)
        self.stop = stop or StopSignal()
        self.checkpoints: Checkpoints | None = None
        # Objects this run put in the bucket that no models row points at yet: removed if the run fails.
        self.uploaded: list[str] = []

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
            metadata_patch={
                "training_run": {
                    "name": run_name(self.project_id),
                    "executor": "cli",
                    "accepted_at": utcnow().isoformat(),
                }
            },
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
        except Interrupted as exc:
            return self._interrupted(exc)
        except Exception as exc:  # noqa: BLE001 - every failure must end as a `failed` project
            return self._fail(exc)
        except BaseException as exc:  # interrupted: record it, then let the interruption through
            self._fail(exc)
            raise

    def _train(self, project: Project, tmp: Path) -> RunResult:
        # Claimed runs were already announced as "Training initiated" by whoever claimed them (the API).
        announcement = "Trainer started" if self.claimed else "Training initiated"
        self.log.info(announcement, project_name=project.name, metadata=project.metadata, pid=os.getpid())
        config, dataset_url = self._load_config(project)
        layout = self._fetch_dataset(dataset_url, tmp)

        self._enter("build_model")
        device = pick_device(self.settings.device)
        bf16 = use_bf16(device, self.settings.precision)
        self.checkpoints = self._checkpoints(project, config, layout, tmp)
        resumed = self.checkpoints.load() if self.checkpoints is not None else None
        # A seed drawn at random is saved with the checkpoint: a resumed epoch replays the same order.
        seed = int(resumed["seed"]) if resumed else config.seed
        if seed is None:
            seed = secrets.randbelow(2**31)
        model = self._build_model(config, layout, device, seed, tmp)

        self._enter("prepare_data")
        loaders = self._prepare_data(layout, config, device, seed, tmp)
        preprocess = Preprocess(
            device,
            augment=config.augment,
            min_scale=config.augment_min_scale,
            seed=seed,
            channels_last=self.settings.channels_last,
        )

        self._enter("train")
        started = time.perf_counter()
        fitter = Fitter(model, loaders, preprocess, self._fit_options(config, layout, bf16))
        if resumed:
            self._resume(fitter, resumed)
        history = self._fit(fitter, config, seed)
        training_seconds = time.perf_counter() - started

        self._enter("evaluate")
        report, test_loss = self._test(fitter, layout)
        metrics = self._metrics(fitter, history, report, test_loss, training_seconds, seed, bf16)
        metadata = self._model_metadata(config, layout, metrics, device)
        url, sidecar_url = self._publish(project, model, metadata, tmp)

        self._enter("verify")
        self._verify(url, tmp, model, config, layout, loaders["test"], preprocess)
        self._enter("record")
        return self._record(project, url, sidecar_url, metadata)

    def _load_config(self, project: Project) -> tuple[TrainingConfig, str]:
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
        return config, dataset.gcs_url

    def _fetch_dataset(self, url: str, tmp: Path) -> DatasetLayout:
        self._enter("download")
        archive = download_dataset(self.storage, url, tmp)
        self.log.info("Dataset downloaded", url=url, bytes=archive.stat().st_size)
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
        return layout

    def _build_model(
        self, config: TrainingConfig, layout: DatasetLayout, device: torch.device, seed: int, tmp: Path
    ) -> torch.nn.Module:
        weights_file = None
        if config.weights_url:
            weights_file = tmp / "weights.pth"
            self.storage.download(config.weights_url, weights_file)
        torch.manual_seed(seed)  # the new head's initial weights
        model = build_model(
            config.preferred_model,
            len(layout.classes),
            pretrained=config.pretrained,
            weights_file=weights_file,
        ).to(device)
        if self.settings.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
        return model

    def _test(self, fitter: Fitter, layout: DatasetLayout) -> tuple[dict[str, Any], float]:
        test = evaluate(
            fitter.forward,
            fitter.model,
            fitter.loaders["test"],
            fitter.preprocess,
            fitter.eval_criterion,
            bf16=fitter.options.bf16,
        )
        report = classification_report(
            confusion_matrix(test.targets, test.predictions, len(layout.classes)), layout.classes
        )
        self.log.info(
            f"Test accuracy {report['accuracy']:.4f}, macro F1 {report['macro_f1']:.4f}",
            test_loss=round(test.loss, 6),
            test_accuracy=report["accuracy"],
            test_macro_f1=report["macro_f1"],
        )
        return report, test.loss

    def _publish(
        self, project: Project, model: torch.nn.Module, metadata: dict[str, Any], tmp: Path
    ) -> tuple[str, str]:
        """Save and upload the weights, then the JSON sidecar beside them; returns both URLs."""
        self._enter("save")
        weights = save_state_dict(model, tmp / "model.pth")
        self._enter("upload")
        key = model_key(project.name, self.project_id)
        url = self.storage.model_url(key)
        attempts = self._upload(weights, url)
        self.log.info("Model uploaded", model_url=url, bytes=weights.stat().st_size, attempts=attempts)
        sidecar_url = self.storage.model_url(sidecar_key(key))
        sidecar = {"format_version": 1, "model_url": url, **metadata}
        self._upload(
            atomic_write(tmp / "model.json", lambda f: f.write_text(json.dumps(sidecar, indent=2))),
            sidecar_url,
        )
        return url, sidecar_url

    def _upload(self, path: Path, url: str) -> int:
        """Upload with verification and retries; remembered, so that a failed run removes it again."""
        self.uploaded.append(url)
        return upload_verified(
            self.storage,
            path,
            url,
            attempts=self.settings.upload_attempts,
            retry_delay_s=self.upload_retry_delay_s,
        )

    def _prepare_data(
        self, layout: DatasetLayout, config: TrainingConfig, device: torch.device, seed: int, tmp: Path
    ) -> dict[str, Loader]:
        started = time.perf_counter()
        options = LoaderOptions(
            image_size=config.image_size,
            batch_size=config.batch_size,
            seed=seed,
            workers=self.settings.resolved_num_workers,
            pin=device.type == "cuda",
            cache=self.settings.data_cache,
            cache_max_bytes=self.settings.data_cache_max_bytes,
            cache_dir=tmp,
        )
        loaders = make_loaders(layout.samples, options)
        seconds = time.perf_counter() - started
        cached = [split for split, loader in loaders.items() if loader.cached]
        streamed = [split for split in loaders if split not in cached]
        self.log.info(
            f"Data ready in {seconds:.1f} s: "
            + (f"{', '.join(cached)} decoded once into the {options.cache} cache" if cached else "no cache")
            + (f"; {', '.join(streamed)} streamed" if streamed else ""),
            cached_splits=cached,
            cache=options.cache,
            seconds=round(seconds, 3),
            workers=options.workers,
        )
        return loaders

    def _fit_options(self, config: TrainingConfig, layout: DatasetLayout, bf16: bool) -> FitOptions:
        class_weights = None
        if config.class_weighted_loss:
            counts = [0] * len(layout.classes)
            for _path, target in layout.samples["train"]:
                counts[target] += 1
            total = sum(counts)
            # Inverse frequency, scaled so that a balanced dataset gets weight 1 everywhere.
            class_weights = tuple(total / (len(counts) * max(c, 1)) for c in counts)
        return FitOptions(
            epochs=config.epochs,
            learning_rate=config.learning_rate,
            log_every=self.settings.log_every_steps,
            lr_schedule=config.lr_schedule,
            lr_step_size=config.resolved_lr_step_size,
            lr_gamma=config.lr_gamma,
            label_smoothing=config.label_smoothing,
            class_weights=class_weights,
            patience=config.early_stopping_patience,
            bf16=bf16,
            compile=self.settings.compile,
        )

    def _checkpoints(
        self, project: Project, config: TrainingConfig, layout: DatasetLayout, tmp: Path
    ) -> Checkpoints | None:
        if not self.settings.checkpoints:
            return None
        run = project.metadata.get("training_run") or {}
        name = str(run.get("name") or run_name(self.project_id))
        key = {
            "project_id": str(self.project_id),
            # The claim this attempt belongs to: a new start of the project never resumes an old run.
            "accepted_at": run.get("accepted_at"),
            "class_to_idx": layout.class_to_idx,
            "config": config.model_dump(mode="json"),
        }
        return Checkpoints(self.storage, self.storage.model_url(checkpoint_key(name)), tmp, key)

    def _resume(self, fitter: Fitter, state: dict[str, Any]) -> None:
        fitter.load_state_dict(state["fitter"])
        progress = fitter.progress
        self.log.info(
            f"Resuming from the checkpoint at epoch {progress.epoch}, batch {progress.batches_done} "
            f"({len(progress.history)} epochs done)",
            checkpoint_url=self.checkpoints.url if self.checkpoints else None,
            epoch=progress.epoch,
            batches_done=progress.batches_done,
            epochs_done=len(progress.history),
        )

    def _fit(self, fitter: Fitter, config: TrainingConfig, seed: int) -> list[dict[str, Any]]:
        def on_epoch(record: dict[str, Any]) -> None:
            self.log.info(
                f"Epoch {record['epoch']}/{config.epochs}: train_loss={record['train_loss']:.4f} "
                f"val_loss={record['val_loss']:.4f} val_accuracy={record['val_accuracy']:.4f} "
                f"{record['images_per_s']:.1f} img/s",
                **record,
                total_epochs=config.epochs,
            )

        def checkpoint() -> None:
            if self.checkpoints is not None:
                self.checkpoints.save({"seed": seed, "fitter": fitter.state_dict()})

        with self.stop.deferred():
            history = fitter.fit(on_epoch, checkpoint, lambda: self.stop.requested)
        if fitter.progress.stopped_early:
            self.log.info(
                f"Stopped early after epoch {len(history)}: no val accuracy gain for "
                f"{config.early_stopping_patience} epochs; keeping epoch {fitter.progress.best_epoch}",
                best_epoch=fitter.progress.best_epoch,
            )
        return history

    def _metrics(
        self,
        fitter: Fitter,
        history: list[dict[str, Any]],
        report: dict[str, Any],
        test_loss: float,
        training_seconds: float,
        seed: int,
        bf16: bool,
    ) -> dict[str, Any]:
        progress = fitter.progress
        best = next(r for r in history if r["epoch"] == progress.best_epoch)
        train_seconds = sum(r["seconds"] for r in history)
        train_images = fitter.loaders["train"].sampler.n * len(history)
        return {
            "history": history,
            "best_epoch": progress.best_epoch,
            "epochs_run": len(history),
            "stopped_early": progress.stopped_early,
            "val_accuracy": best["val_accuracy"],
            "val_loss": best["val_loss"],
            "test_accuracy": report["accuracy"],
            "test_loss": round(test_loss, 6),
            "test_macro_f1": report["macro_f1"],
            "test_metrics": report,
            "images_per_second": round(train_images / train_seconds, 2) if train_seconds else 0.0,
            "training_seconds": round(training_seconds, 3),
            "seed": seed,
            "precision": "bf16" if bf16 else "fp32",
        }

    def _verify(
        self,
        url: str,
        tmp: Path,
        model: torch.nn.Module,
        config: TrainingConfig,
        layout: DatasetLayout,
        test_loader: Loader,
        preprocess: Preprocess,
    ) -> None:
        # What the evaluation agent will read: the object in the bucket, not the local file.
        copy = tmp / "verify.pth"
        self.storage.download(url, copy)
        test_loader.sampler.set_epoch(1)
        images, _targets = next(iter(test_loader))
        agreement = smoke_check(
            copy, config.preferred_model, len(layout.classes), model, preprocess(images, train=False)
        )
        self.log.info(
            f"Smoke check passed: the uploaded file reloads and agrees on {agreement:.0%} of a test batch",
            agreement=agreement,
        )

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

    def _model_metadata(
        self,
        config: TrainingConfig,
        layout: DatasetLayout,
        metrics: dict[str, Any],
        device: torch.device,
    ) -> dict[str, Any]:
        """The models row's metadata, also written to the JSON sidecar beside the weights."""
        return {
            "architecture": config.preferred_model,
            "num_classes": len(layout.classes),
            "class_to_idx": layout.class_to_idx,
            "image_size": config.image_size,
            "normalization": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD},
            "preprocessing": f"RGB, resized to {config.image_size}x{config.image_size} (bilinear), "
            "scaled to [0, 1], normalised with mean/std",
            "epochs": config.epochs,
            "learning_rate": config.learning_rate,
            "batch_size": config.batch_size,
            "pretrained": config.pretrained or config.weights_url is not None,
            "optimizer": "adam",
            "loss": "cross_entropy",
            "training_options": config.model_dump(mode="json", exclude={"preferred_model", "weights_url"}),
            **metrics,
            "device": device.type,
            "dataset": layout.summary(),
            "versions": {
                "training_agent": __version__,
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
            },
        }

    def _record(self, project: Project, url: str, sidecar_url: str, metadata: dict[str, Any]) -> RunResult:
        metadata = {**metadata, "sidecar_url": sidecar_url}
        row = NewModel(
            project_id=self.project_id, name=f"{project.name}_model", gcs_url=url, metadata=metadata
        )
        model_row = self.records.insert_model(row)
        self.uploaded = []  # the row points at them now
        if self.checkpoints is not None:
            self.checkpoints.delete()
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
            val_accuracy=metadata["val_accuracy"],
            test_accuracy=metadata["test_accuracy"],
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

    def _remove_leftovers(self, *, checkpoint: bool) -> None:
        """Best effort: the run's uploads that no row points at, and (when no retry will come) its
        checkpoint."""
        for url in self.uploaded:
            try:
                self.storage.delete(url)
            except Exception:
                logger.warning("Could not remove %s", url, exc_info=True)
        self.uploaded = []
        if checkpoint and self.checkpoints is not None:
            self.checkpoints.delete()

    def _interrupted(self, exc: Interrupted) -> RunResult:
        """Stopped by SIGTERM: leave the project `training` and the checkpoint in place, so the next
        attempt (the Job's retry, or the local executor's) resumes; exit with EXIT_RETRY."""
        current = self.records.get_project(self.project_id)
        status = current.status if current else None
        # Cancelled (or otherwise settled) meanwhile: nobody will resume this run, so its checkpoint goes too.
        resumable = status == ProjectStatus.TRAINING.value
        self._remove_leftovers(checkpoint=not resumable)
        checkpoint = None
        if resumable and self.checkpoints is not None and self.checkpoints.saved:
            checkpoint = {"url": self.checkpoints.url, "saved_at": utcnow().isoformat()}
        self.log.warning(
            f"Trainer stopped by SIGTERM during step {self.step}: "
            + (
                "checkpoint saved, the next attempt resumes from it"
                if checkpoint
                else "no checkpoint to resume"
            ),
            step=self.step,
            checkpoint=checkpoint,
            exit_code=exc.exit_code,
        )
        return RunResult(self.project_id, False, status, exc.exit_code, error={"message": str(exc)})

    def _fail(self, exc: BaseException) -> RunResult:
        exit_code = exc.exit_code if isinstance(exc, TrainingAgentError) else EXIT_FAILED
        error = {**self._error_details(exc), "exit_code": exit_code}
        self.log.error(f"Training failed at step {self.step}: {error['message']}", **error)
        self._remove_leftovers(checkpoint=True)
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
