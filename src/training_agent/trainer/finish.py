"""The stages that hand the model on: publish (save + upload, under a name no other project holds) →
verify (the uploaded object reloads and agrees) → record (a `models` row, then `pending_evaluation`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torchvision

from training_agent import __version__
from training_agent.core.completion import log_complete
from training_agent.core.errors import EXIT_OK, Interrupted
from training_agent.core.files import atomic_write
from training_agent.core.lease import run_id_of
from training_agent.core.records import NewModel, Project, ProjectStatus
from training_agent.trainer import plots
from training_agent.trainer.checkpoint import save_state_dict
from training_agent.trainer.data import IMAGENET_MEAN, IMAGENET_STD, Loader
from training_agent.trainer.dataset_checks import DatasetLayout
from training_agent.trainer.engine import Fitter
from training_agent.trainer.preprocess import Preprocess
from training_agent.trainer.publish import (
    choose_model_key,
    picture_key,
    sidecar_key,
    upload_verified,
    write_precondition,
)
from training_agent.trainer.recipes import Resolved
from training_agent.trainer.result import RunResult
from training_agent.trainer.runlog import log_key
from training_agent.trainer.stages import RunContext
from training_agent.trainer.verify import smoke_check

PICTURE_KEYS = ("curves_url", "confusion_url")
# Objects beside the model that its `models` row points at (the log: trainer/runlog.py).
BESIDE_KEYS = (*PICTURE_KEYS, "log_url")


def metrics(
    fitter: Fitter,
    history: list[dict[str, Any]],
    report: dict[str, Any],
    test_loss: float,
    training_seconds: float,
    seed: int,
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
        "test_balanced_accuracy": report["balanced_accuracy"],
        "test_metrics": report,
        "images_per_second": round(train_images / train_seconds, 2) if train_seconds else 0.0,
        "training_seconds": round(training_seconds, 3),
        "seed": seed,
        # What the optimiser started from: the recipe's (or the project's) rate, or the range test's.
        "learning_rate": fitter.options.learning_rate,
        "precision": fitter.options.precision,  # bf16/fp16 autocast or fp32: what `auto` chose
        **distribution(fitter),
    }


def distribution(fitter: Fitter) -> dict[str, Any]:
    """How many processes trained, on how many nodes, and the batch they made together."""
    group = fitter.group
    batch = fitter.loaders["train"].sampler.batch_size
    return {
        "world_size": group.world_size,
        "nodes": group.place.nodes,
        "global_batch_size": batch * group.world_size,
    }


def model_metadata(
    ctx: RunContext,
    resolved: Resolved,
    layout: DatasetLayout,
    run_metrics: dict[str, Any],
    device: torch.device,
    attempt: int,
) -> dict[str, Any]:
    """The models row's metadata, also written to the JSON sidecar beside the weights."""
    config = resolved.config
    return {
        "architecture": config.preferred_model,
        # Builder arguments that change weight shapes (a ViT trained at another size): rebuild with them.
        "architecture_kwargs": resolved.shape_kwargs,
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
        "optimizer": config.optimizer,
        "loss": "cross_entropy",
        "recipe": resolved.record(),
        "training_options": config.model_dump(mode="json", exclude={"preferred_model", "weights_url"}),
        **run_metrics,
        "device": device.type,
        "dataset": layout.summary(),
        "dataset_checks": layout.checks(),
        "run_id": ctx.run_id,
        "attempt": attempt,
        "versions": {
            "training_agent": __version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
        },
    }


def draw(
    ctx: RunContext,
    history: list[dict[str, Any]],
    best_epoch: int,
    report: dict[str, Any],
    layout: DatasetLayout,
    title: str,
) -> dict[str, Path]:
    """The training curves and the test confusion matrix as PNGs in the run's folder. Pictures are a
    courtesy: a failure to draw them is logged and the model is handed on without them."""
    ctx.enter("draw")
    work = ctx.owner.work_dir
    try:
        return {
            "curves": plots.write_curves(history, best_epoch, work / "curves.png", title=title),
            "confusion": plots.write_confusion(
                report["confusion_matrix"], layout.classes, work / "confusion.png", title=title
            ),
        }
    except Exception as exc:  # noqa: BLE001 - see the docstring
        ctx.log.warning(f"Could not draw the run's pictures: {type(exc).__name__}: {exc}")
        return {}


def publish(
    ctx: RunContext,
    project: Project,
    model: torch.nn.Module,
    metadata: dict[str, Any],
    pictures: dict[str, Path],
    retry_delay_s: float,
) -> tuple[str, str, dict[str, str]]:
    """Save and upload the weights, the pictures and the run's log so far beside them, then the JSON
    sidecar; returns the model's and the sidecar's URLs and those beside them (`curves_url`,
    `confusion_url`, `log_url`)."""
    ctx.enter("save")
    work = ctx.owner.work_dir
    weights = save_state_dict(model, work / "model.pth")
    ctx.enter("upload")
    key, precondition = choose_model_key(ctx.storage, project.name, ctx.project_id)
    url = ctx.storage.model_url(key)
    attempts = upload_verified(
        ctx.owner,
        weights,
        url,
        if_generation_match=precondition,
        attempts=ctx.settings.upload_attempts,
        retry_delay_s=retry_delay_s,
    )
    ctx.log.info("Model uploaded", model_url=url, bytes=weights.stat().st_size, attempts=attempts)
    beside = {}
    for kind, path in pictures.items():
        beside[f"{kind}_url"] = _upload_beside(
            ctx, path, ctx.storage.model_url(picture_key(key, kind)), retry_delay_s
        )
    if beside:
        ctx.log.info("Pictures uploaded", **beside)
    if ctx.run_log is not None:
        log_url = ctx.run_log.publish(
            ctx.owner,
            ctx.storage.model_url(log_key(key)),
            attempts=ctx.settings.upload_attempts,
            retry_delay_s=retry_delay_s,
        )
        if log_url is not None:
            beside["log_url"] = log_url
    sidecar = {"format_version": 1, "model_url": url, **metadata, **beside}
    document = atomic_write(work / "model.json", lambda f: f.write_text(json.dumps(sidecar, indent=2)))
    sidecar_url = _upload_beside(ctx, document, ctx.storage.model_url(sidecar_key(key)), retry_delay_s)
    return url, sidecar_url, beside


def _upload_beside(ctx: RunContext, path: Path, url: str, retry_delay_s: float) -> str:
    """A file that follows its model's name: free, or this project's, or (an older version's file of
    unknown owner beside our model) left alone by a refused create."""
    upload_verified(
        ctx.owner,
        path,
        url,
        if_generation_match=write_precondition(ctx.storage, url, ctx.project_id) or 0,
        attempts=ctx.settings.upload_attempts,
        retry_delay_s=retry_delay_s,
    )
    return url


def verify(
    ctx: RunContext,
    url: str,
    model: torch.nn.Module,
    resolved: Resolved,
    layout: DatasetLayout,
    test_loader: Loader,
    preprocess: Preprocess,
) -> None:
    """What the evaluation agent will read: the object in the bucket, not the local file, must reload."""
    ctx.enter("verify")
    # A stop (cancel, preemption) during the check must read as a stop, not as a broken model.
    with ctx.stop.deferred():
        copy = ctx.owner.work_dir / "verify.pth"
        ctx.storage.download(url, copy)
        test_loader.sampler.set_epoch(1)
        images, _targets = next(iter(test_loader))
        agreement = smoke_check(
            copy,
            resolved.config.preferred_model,
            len(layout.classes),
            model,
            preprocess(images, train=False),
            kwargs=resolved.shape_kwargs,
        )
    if ctx.stop.requested:
        raise Interrupted("Stopped during the verify step")
    ctx.log.info(
        f"Smoke check passed: the uploaded file reloads and agrees on {agreement:.0%} of a test batch",
        agreement=agreement,
    )


def record(
    ctx: RunContext, project: Project, url: str, sidecar_url: str, metadata: dict[str, Any]
) -> RunResult:
    """A `models` row, then `training` → `pending_evaluation`; the run's checkpoint goes."""
    ctx.enter("record")
    current = ctx.records.get_project(ctx.project_id)
    if current is None or current.status != ProjectStatus.TRAINING.value or run_id_of(current) != ctx.run_id:
        # Cancelled or reaped meanwhile: nobody wants this model any more; the failure path removes it.
        raise Interrupted("The run was cancelled or taken over before its model was recorded")
    metadata = {**metadata, "sidecar_url": sidecar_url}
    row = NewModel(project_id=ctx.project_id, name=f"{project.name}_model", gcs_url=url, metadata=metadata)
    # The row and what it points at stand or fall together: a SIGTERM here waits until both are kept.
    with ctx.stop.deferred():
        model_row = ctx.records.insert_model(row)
        ctx.owner.keep(url, sidecar_url, *(str(metadata[k]) for k in BESIDE_KEYS if metadata.get(k)))
        ctx.stop.ignore()  # recorded: a late SIGTERM must not undo or misreport it
    if ctx.checkpoints is not None:
        ctx.checkpoints.delete()
    moved = ctx.records.transition_project(
        ctx.project_id,
        from_status=ProjectStatus.TRAINING.value,
        to_status=ProjectStatus.PENDING_EVALUATION.value,
    )
    if moved is None:
        # Whoever moved it (a cancel, the reaper) wrote the run's closing row: this is no second one.
        current = ctx.records.get_project(ctx.project_id)
        ctx.log.warning(
            "Model recorded, but the project was no longer in 'training'; its status was left as is",
            status=current.status if current else None,
        )
    else:
        log_complete(
            ctx.log,
            project.name,
            url,
            model_id=str(model_row.id),
            val_accuracy=metadata["val_accuracy"],
            test_accuracy=metadata["test_accuracy"],
        )
    final = moved or ctx.records.get_project(ctx.project_id)
    return RunResult(
        project_id=ctx.project_id,
        succeeded=True,
        status=final.status if final else None,
        exit_code=EXIT_OK,
        model_url=url,
        metrics=metadata,
    )
