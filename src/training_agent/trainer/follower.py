"""The processes that follow rank 0 under torchrun: each trains its share of every step, and nothing else.

Rank 0 claims the project, downloads and checks the dataset, picks the recipe and finds the checkpoint
(pipeline.py), then hands every other rank a `Handover`: the options, the checked samples, the seed and the
state to resume from. A follower never writes to the records store or the bucket: it reads rank 0's
unpacked images when it runs on rank 0's node, and unpacks its own copy of the dataset zip (the same plan,
so the same samples) on any other node. Rank 0 alone logs, checkpoints, publishes and records; its
followers take part in every collective it makes (each step's gradients, each epoch's metrics and
validation, each checkpoint's RNG states, the test pass) and then leave with exit code 0.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from training_agent.core.datasets.layout import DatasetPlan
from training_agent.core.errors import EXIT_OK, Interrupted
from training_agent.core.settings import Settings
from training_agent.core.storage import ObjectStorage
from training_agent.core.sweep import work_dir_prefix
from training_agent.trainer.data import make_loaders
from training_agent.trainer.dataset_checks import DatasetLayout
from training_agent.trainer.engine import FitOptions, Fitter
from training_agent.trainer.fetch import download_dataset, extract_planned, open_dataset
from training_agent.trainer.group import Group
from training_agent.trainer.interrupt import StopSignal
from training_agent.trainer.preprocess import Augmentation, Preprocess
from training_agent.trainer.recipes import Resolved
from training_agent.trainer.replica import loader_options, make_model, pick_device

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Handover:
    """What rank 0 tells its followers once the dataset is checked and the options chosen."""

    project_id: UUID
    run_id: str
    resolved: Resolved
    layout: DatasetLayout
    options: FitOptions  # with the range test's learning rate, when it ran (on rank 0)
    seed: int
    dataset_url: str
    plan: DatasetPlan  # how rank 0 unpacked the zip: another node unpacks its copy the same way
    node_rank: int  # rank 0's node: its followers there read rank 0's unpacked images (`layout.root`)
    checkpoints: bool  # whether rank 0 checkpoints: every rank takes part in each one
    resumed: dict[str, Any] | None  # the fitter's state to resume from


def rank_seed(seed: int, rank: int) -> int:
    """Each rank's augmentation draws: different crops for different shares, the same on a resume."""
    return seed + 7919 * rank


def follow(group: Group, settings: Settings, storage: ObjectStorage, stop: StopSignal) -> int:
    """Wait for rank 0's handover, train with it, and return the exit code."""
    handover: Handover | None = group.broadcast(None)
    if handover is None:
        logger.info("Rank %d: rank 0 ended the run before training (its log says why)", group.rank)
        return EXIT_OK
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    prefix = work_dir_prefix(handover.project_id, handover.run_id)
    with tempfile.TemporaryDirectory(dir=settings.work_dir, prefix=prefix) as work:
        try:
            _train(handover, group, settings, storage, stop, Path(work))
        except Interrupted as exc:
            logger.info("Rank %d stopped with rank 0: %s", group.rank, exc)
            return exc.exit_code
    return EXIT_OK


def _train(
    handover: Handover, group: Group, settings: Settings, storage: ObjectStorage, stop: StopSignal, work: Path
) -> None:
    config = handover.resolved.config
    layout = _local_layout(handover, group, settings, storage, work)
    device = pick_device(settings.device, group.place.local_rank)
    model = make_model(
        handover.resolved,
        len(layout.classes),
        device,
        settings,
        handover.seed,
        load_weights=False,
        distributed=True,
    )
    loaders = make_loaders(
        layout.samples, loader_options(settings, config, device, handover.seed, work, group)
    )
    preprocess = Preprocess(
        device,
        augmentation=Augmentation.from_config(config),
        seed=rank_seed(handover.seed, group.rank),
        channels_last=settings.channels_last,
        num_classes=len(layout.classes),
    )
    fitter = Fitter(model, loaders, preprocess, handover.options, group)
    if handover.resumed is not None:
        fitter.load_state_dict(handover.resumed)
    logger.info(
        "Rank %d of %d trains %d of %d training images per epoch",
        group.rank,
        group.world_size,
        loaders["train"].sampler.shard_size,
        len(layout.samples["train"]),
    )

    def checkpoint() -> None:
        if handover.checkpoints:
            fitter.state_dict()  # hands this rank's RNG states to rank 0, which writes the checkpoint

    with stop.deferred():
        fitter.fit(lambda record: None, checkpoint, lambda: stop.requested)
    fitter.evaluate("test")  # rank 0's test pass covers every rank's share


def _local_layout(
    handover: Handover, group: Group, settings: Settings, storage: ObjectStorage, work: Path
) -> DatasetLayout:
    """The checked samples, with paths this process can read."""
    if group.place.node_rank == handover.node_rank:
        return handover.layout  # the same machine: rank 0's folder
    archive = download_dataset(storage, handover.dataset_url, work)
    limits = {"max_files": settings.max_dataset_files, "max_bytes": settings.max_dataset_bytes}
    data = work / "data"
    with open_dataset(archive, **limits, max_ratio=settings.max_compression_ratio) as dataset:
        extract_planned(dataset, handover.plan, data, max_bytes=settings.max_dataset_bytes)
    archive.unlink()
    return handover.layout.moved(data)
