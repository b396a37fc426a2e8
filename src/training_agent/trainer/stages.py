"""The stages of a run between its claim and its publication: fetch → gate → build → prepare → fit →
evaluate. Each takes what it needs in its signature and the run's context; each step's name is what logs
and errors say (`ctx.enter`). None of them writes outside the run's folder: objects go through the owner.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import torch

from training_agent.core.datasets.layout import DatasetPlan, plan_layout
from training_agent.core.errors import InvalidInputError
from training_agent.core.logs import AgentLog
from training_agent.core.records import Project, RecordsStore
from training_agent.core.settings import Settings, cpu_count
from training_agent.core.storage import ObjectStorage
from training_agent.trainer.checkpoint import Checkpoints, checkpoint_key
from training_agent.trainer.config import TrainingConfig
from training_agent.trainer.data import Loader, make_loaders
from training_agent.trainer.dataset_checks import DatasetLayout, carve_seed, inspect_dataset
from training_agent.trainer.engine import FitOptions, Fitter
from training_agent.trainer.fetch import download_dataset, extract_planned, open_dataset
from training_agent.trainer.group import SOLO, Group
from training_agent.trainer.identity import dataset_identity, run_identity
from training_agent.trainer.images import set_max_image_pixels
from training_agent.trainer.interrupt import StopSignal
from training_agent.trainer.lr_find import find_lr
from training_agent.trainer.metrics import classification_report, confusion_matrix
from training_agent.trainer.model import check_model_name
from training_agent.trainer.owner import RunOwner
from training_agent.trainer.precision import Precision
from training_agent.trainer.preprocess import Preprocess
from training_agent.trainer.progress import ProgressReporter
from training_agent.trainer.recipes import DataStats, Resolved, resolve
from training_agent.trainer.replica import loader_options, make_model
from training_agent.trainer.runlog import RunLog

logger = logging.getLogger(__name__)


@dataclass
class RunContext:
    """What every stage shares: the stores, the run's owner of side effects, its log and its stop flag."""

    project_id: UUID
    run_id: str
    settings: Settings
    records: RecordsStore
    storage: ObjectStorage
    log: AgentLog
    owner: RunOwner
    stop: StopSignal
    step: str = "load_project"
    checkpoints: Checkpoints | None = field(default=None)
    config: TrainingConfig | None = field(default=None)  # set by load_config
    plan: DatasetPlan | None = field(default=None)  # the dataset's layout, set by fetch
    run_log: RunLog | None = field(default=None)  # this process's log of the run, uploaded at the end

    def enter(self, step: str) -> None:
        """Begin `step`; a stop asked for from another thread (the lease was lost) is honoured here."""
        self.stop.check()
        self.step = step
        logger.debug("step %s", step)


# -- load ---------------------------------------------------------------------------------------------------
def load_config(ctx: RunContext, project: Project) -> tuple[TrainingConfig, str]:
    """The project's dataset URL and training options."""
    ctx.enter("load_dataset")
    dataset = ctx.records.latest_dataset(ctx.project_id)
    if dataset is None or not dataset.gcs_url:
        raise InvalidInputError(
            f"Project {ctx.project_id} has no dataset row with a gcs_url; the dataset agent must "
            "register the zipped dataset first"
        )
    ctx.enter("validate_config")
    config = TrainingConfig.from_metadata(project.metadata)
    check_model_name(config.preferred_model)
    ctx.config = config
    return config, dataset.gcs_url


# -- fetch and gate -----------------------------------------------------------------------------------------
def fetch(ctx: RunContext, url: str) -> dict[str, Any]:
    """Download the dataset, read its layout from the zip's listing (the layout half of the gate) and unpack
    the planned images into the run's folder as train/val/test; returns the dataset object's identity."""
    ctx.enter("download")
    identity = dataset_identity(ctx.storage, url)
    archive = download_dataset(ctx.storage, url, ctx.owner.work_dir)
    ctx.log.info("Dataset downloaded", url=url, bytes=archive.stat().st_size)
    ctx.enter("extract")
    settings = ctx.settings
    limits = {"max_files": settings.max_dataset_files, "max_bytes": settings.max_dataset_bytes}
    with open_dataset(archive, **limits, max_ratio=settings.max_compression_ratio) as dataset:
        if dataset.unwrapped:
            ctx.log.info(f"The dataset zip holds only {dataset.unwrapped}: unpacking that zip instead")
        ctx.enter("validate_dataset")
        ctx.plan = plan = plan_layout(
            dataset.members,
            **limits,
            max_ratio=settings.max_compression_ratio,
            allow_missing_val=ctx.config is not None and ctx.config.val_fraction is not None,
        )
        ctx.log.info(f"Dataset layout: read {plan.split_mapping()}", **plan.summary())
        ctx.enter("extract")
        extract_planned(dataset, plan, ctx.owner.work_dir / "data", max_bytes=settings.max_dataset_bytes)
    archive.unlink()
    return identity


def gate(ctx: RunContext) -> DatasetLayout:
    """Every image decoded once, the validation split carved if asked, leakage looked for."""
    ctx.enter("validate_dataset")
    assert ctx.plan is not None, "fetch comes first"
    config = ctx.config or TrainingConfig()
    set_max_image_pixels(ctx.settings.max_image_pixels)  # before any decode; DataLoader workers inherit it
    layout = inspect_dataset(
        ctx.owner.work_dir / "data",
        ctx.plan,
        max_bad_fraction=ctx.settings.max_bad_image_fraction,
        val_fraction=config.val_fraction,
        seed=carve_seed(config.seed, ctx.run_id),
        fail_on_leakage=ctx.settings.fail_on_split_leakage,
        workers=cpu_count(),
    )
    summary = layout.summary()
    ctx.log.info(
        f"Dataset structure: {summary['num_classes']} classes, "
        + ", ".join(f"{split} {n} images" for split, n in summary["images"].items()),
        **summary,
    )
    for level, message, fields in layout.notes(config.val_fraction):
        if level == "warning":
            ctx.log.warning(message, **fields)
        else:
            ctx.log.info(message, **fields)
    return layout


# -- build --------------------------------------------------------------------------------------------------
def choose_recipe(
    ctx: RunContext, config: TrainingConfig, layout: DatasetLayout, device: torch.device, world_size: int = 1
) -> Resolved:
    """The options this run trains with (`trainer/recipes.py`), logged with how each was chosen."""
    counts = tuple(layout.counts["train"][name] for name in layout.classes)
    stats = DataStats(len(layout.samples["train"]), layout.median_side, counts)
    resolved = resolve(config, stats, cpu=device.type != "cuda", world_size=world_size)
    chosen = resolved.config
    stopping = (
        f", early stopping after {chosen.early_stopping_patience} epochs without gain"
        if chosen.early_stopping_patience
        else ""
    )
    processes = f"; {world_size} processes, global batch {chosen.batch_size * world_size}"
    ctx.log.info(
        f"Recipe {chosen.recipe} ({resolved.family.name} family): {chosen.image_size} px, batch "
        f"{chosen.batch_size}, {chosen.optimizer} at {chosen.learning_rate:g}, {chosen.lr_schedule} "
        f"schedule, up to {chosen.epochs} epochs{stopping}" + (processes if world_size > 1 else ""),
        recipe=resolved.record(),
    )
    if resolved.class_weighted and config.class_weighted_loss is None:
        ctx.log.info(
            f"The classes are imbalanced (largest/smallest {stats.imbalance:.1f}x): the loss is weighted by "
            "inverse class frequency (set class_weighted_loss to false to turn this off)",
            imbalance=round(stats.imbalance, 3),
        )
    return resolved


def open_checkpoints(
    ctx: RunContext,
    config: TrainingConfig,
    layout: DatasetLayout,
    dataset: dict[str, Any],
    world_size: int = 1,
) -> dict[str, Any] | None:
    """Find this run's checkpoint; returns its state when this run may resume from it, and says so."""
    if not ctx.settings.checkpoints:
        return None
    identity = run_identity(ctx.project_id, ctx.run_id, dataset, config, layout.class_to_idx, world_size)
    url = ctx.storage.model_url(checkpoint_key(ctx.project_id, ctx.run_id))
    ctx.checkpoints = Checkpoints(ctx.owner, url, identity)
    return ctx.checkpoints.load()


def build(
    ctx: RunContext,
    resolved: Resolved,
    layout: DatasetLayout,
    device: torch.device,
    seed: int,
    *,
    distributed: bool = False,
) -> torch.nn.Module:
    config = resolved.config
    weights_file = None
    if config.weights_url:
        weights_file = ctx.owner.work_dir / "weights.pth"
        ctx.storage.download(config.weights_url, weights_file)
    return make_model(
        resolved,
        len(layout.classes),
        device,
        ctx.settings,
        seed,
        weights_file=weights_file,
        distributed=distributed,
    )


# -- prepare ------------------------------------------------------------------------------------------------
def prepare(
    ctx: RunContext,
    layout: DatasetLayout,
    config: TrainingConfig,
    device: torch.device,
    seed: int,
    group: Group = SOLO,
) -> dict[str, Loader]:
    ctx.enter("prepare_data")
    started = time.perf_counter()
    options = loader_options(ctx.settings, config, device, seed, ctx.owner.work_dir, group)
    loaders = make_loaders(layout.samples, options)
    seconds = time.perf_counter() - started
    cached = [split for split, loader in loaders.items() if loader.cached]
    streamed = [split for split in loaders if split not in cached]
    ctx.log.info(
        f"Data ready in {seconds:.1f} s: "
        + (f"{', '.join(cached)} decoded once into the {options.cache} cache" if cached else "no cache")
        + (f"; {', '.join(streamed)} streamed" if streamed else ""),
        cached_splits=cached,
        cache=options.cache,
        seconds=round(seconds, 3),
        workers=options.workers,
    )
    return loaders


# -- fit ----------------------------------------------------------------------------------------------------
def fit_options(
    resolved: Resolved, layout: DatasetLayout, settings: Settings, precision: Precision
) -> FitOptions:
    config = resolved.config
    class_weights = None
    if resolved.class_weighted:
        counts = [layout.counts["train"][name] for name in layout.classes]
        total = sum(counts)
        # Inverse frequency, scaled so that a balanced dataset gets weight 1 everywhere.
        class_weights = tuple(total / (len(counts) * max(c, 1)) for c in counts)
    return FitOptions(
        epochs=config.epochs,
        learning_rate=config.learning_rate,
        log_every=settings.log_every_steps,
        optimizer=config.optimizer,
        weight_decay=config.weight_decay,
        lr_schedule=config.lr_schedule,
        lr_warmup_epochs=config.lr_warmup_epochs or 0.0,
        lr_step_size=config.resolved_lr_step_size,
        lr_gamma=config.lr_gamma,
        label_smoothing=config.label_smoothing,
        grad_clip_norm=resolved.grad_clip_norm,
        class_weights=class_weights,
        patience=config.early_stopping_patience,
        precision=precision,
        compile=settings.compile,
    )


def find_learning_rate(
    ctx: RunContext,
    model: torch.nn.Module,
    loaders: dict[str, Loader],
    preprocess: Preprocess,
    options: FitOptions,
) -> tuple[FitOptions, dict[str, Any]]:
    """The opt-in range test: returns the options with the learning rate it found, and its record."""
    ctx.enter("lr_find")
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=options.label_smoothing)
    finding = find_lr(model, loaders["train"], preprocess, criterion, options)
    if finding.learning_rate is None:
        ctx.log.warning(
            f"The learning-rate range test found no rate where the loss falls ({finding.steps} steps); "
            f"keeping {options.learning_rate:g}",
            lr_find=finding.record(),
        )
        return options, finding.record()
    ctx.log.info(
        f"Learning-rate range test ({finding.steps} steps): using {finding.learning_rate:.3g} "
        f"instead of {options.learning_rate:g}",
        lr_find=finding.record(),
    )
    return dataclasses.replace(options, learning_rate=finding.learning_rate), finding.record()


def resume(ctx: RunContext, fitter: Fitter, state: dict[str, Any]) -> None:
    fitter.load_state_dict(state["fitter"])
    progress = fitter.progress
    ctx.log.info(
        f"Resuming from the checkpoint at epoch {progress.epoch}, batch {progress.batches_done} "
        f"({len(progress.history)} epochs done)",
        checkpoint_url=ctx.checkpoints.url if ctx.checkpoints else None,
        epoch=progress.epoch,
        batches_done=progress.batches_done,
        epochs_done=len(progress.history),
        resumed=True,
    )


def fit(
    ctx: RunContext, fitter: Fitter, config: TrainingConfig, seed: int, progress: ProgressReporter
) -> list[dict[str, Any]]:
    ctx.enter("train")

    def on_epoch(record: dict[str, Any]) -> None:
        progress.epoch_finished(record)
        ctx.log.info(
            f"Epoch {record['epoch']}/{config.epochs}: train_loss={record['train_loss']:.4f} "
            f"val_loss={record['val_loss']:.4f} val_accuracy={record['val_accuracy']:.4f} "
            f"{record['images_per_s']:.1f} img/s",
            **record,
            total_epochs=config.epochs,
        )

    def checkpoint() -> None:
        if ctx.checkpoints is not None:
            state = fitter.state_dict()  # under torchrun, every rank takes part (follower.py)
            if state is not None:
                ctx.checkpoints.save({"seed": seed, "fitter": state})

    with ctx.stop.deferred():
        history = fitter.fit(on_epoch, checkpoint, lambda: ctx.stop.requested, on_step=progress)
    if fitter.progress.stopped_early:
        ctx.log.info(
            f"Stopped early after epoch {len(history)}: no val accuracy gain for "
            f"{config.early_stopping_patience} epochs; keeping epoch {fitter.progress.best_epoch}",
            best_epoch=fitter.progress.best_epoch,
        )
    return history


# -- evaluate -----------------------------------------------------------------------------------------------
def evaluate_on_test(ctx: RunContext, fitter: Fitter, layout: DatasetLayout) -> tuple[dict[str, Any], float]:
    """The best weights on the test split: accuracy, macro F1, per-class metrics, confusion matrix."""
    ctx.enter("evaluate")
    result = fitter.evaluate("test")
    report = classification_report(
        confusion_matrix(result.targets, result.predictions, len(layout.classes)), layout.classes
    )
    ctx.log.info(
        f"Test accuracy {report['accuracy']:.4f}, balanced accuracy {report['balanced_accuracy']:.4f}, "
        f"macro F1 {report['macro_f1']:.4f}",
        test_loss=round(result.loss, 6),
        test_accuracy=report["accuracy"],
        test_balanced_accuracy=report["balanced_accuracy"],
        test_macro_f1=report["macro_f1"],
    )
    return report, result.loss
