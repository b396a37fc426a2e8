"""What every process of a run builds alike, rank 0 (`stages.py`) and its followers (`follower.py`): the
device it trains on, the model, and how it loads its share of the data. Nothing here reads the records or the
bucket."""

from __future__ import annotations

from pathlib import Path

import torch

from training_agent.core.errors import ConfigurationError
from training_agent.core.settings import Settings
from training_agent.trainer.config import TrainingConfig
from training_agent.trainer.data import LoaderOptions
from training_agent.trainer.group import SOLO, Group
from training_agent.trainer.model import build_model, set_batchnorm_momentum
from training_agent.trainer.recipes import Resolved

# PyTorch's default. Families built for long ImageNet runs use far less (see `set_batchnorm_momentum`).
BATCHNORM_MOMENTUM = 0.1


def pick_device(setting: str, local_rank: int = 0) -> torch.device:
    """The device this process trains on; under torchrun, a node's process i takes its GPU i."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError("TRAINING_AGENT_DEVICE=cuda, but no CUDA device is available")
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigurationError(
                f"Process {local_rank} of this node has no GPU of its own ({torch.cuda.device_count()} "
                "visible): start at most one process per GPU"
            )
        return torch.device("cuda", local_rank)
    return torch.device(setting)


def make_model(
    resolved: Resolved,
    num_classes: int,
    device: torch.device,
    settings: Settings,
    seed: int,
    *,
    weights_file: Path | None = None,
    load_weights: bool = True,
    distributed: bool = False,
) -> torch.nn.Module:
    """The run's model on `device`. `load_weights=False` builds the same architecture without reading any
    weights: the followers of a torchrun launch, which DDP gives rank 0's weights."""
    config = resolved.config
    torch.manual_seed(seed)  # the new head's (or, from scratch, every layer's) initial weights
    model = build_model(
        config.preferred_model,
        num_classes,
        pretrained=config.pretrained,
        weights_file=weights_file,
        kwargs=resolved.build_kwargs,
        load_weights=load_weights,
    )
    set_batchnorm_momentum(model, BATCHNORM_MOMENTUM)
    if distributed and settings.sync_batchnorm and device.type == "cuda":
        # Batch statistics over every GPU's images, not each GPU's own small batch.
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[no-untyped-call]
    model = model.to(device)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    return model


def loader_options(
    settings: Settings,
    config: TrainingConfig,
    device: torch.device,
    seed: int,
    cache_dir: Path,
    group: Group = SOLO,
) -> LoaderOptions:
    """How this process loads its share of the data (every process of a node shares its cores)."""
    workers = settings.resolved_num_workers
    if group.distributed:
        workers = max(workers // max(group.world_size // group.place.nodes, 1), 0)
    return LoaderOptions(
        image_size=config.image_size,
        batch_size=config.batch_size,
        seed=seed,
        workers=workers,
        pin=device.type == "cuda",
        cache=settings.data_cache,
        cache_max_bytes=settings.data_cache_max_bytes,
        cache_dir=cache_dir,
        rank=group.rank,
        world_size=group.world_size,
        decode_device=str(device) if device.type == "cuda" and settings.gpu_decode else None,
    )
