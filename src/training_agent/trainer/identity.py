"""A run's identity: what a checkpoint must match before the run resumes from it."""

from __future__ import annotations

import hashlib
import json
from typing import Any
from uuid import UUID

from training_agent.core.errors import ObjectNotFoundError
from training_agent.core.storage import ObjectStorage
from training_agent.trainer.config import TrainingConfig


def dataset_identity(storage: ObjectStorage, url: str) -> dict[str, Any]:
    """The dataset object as it is now: GCS's generation, or the file's size and mtime (in ns) locally.
    A new upload under the same name has another identity."""
    info = storage.stat(url)
    if info is None:
        raise ObjectNotFoundError(f"The dataset {url} does not exist; the dataset agent must upload it first")
    return {"url": url, "generation": info.generation, "size": info.size}


def options_hash(config: TrainingConfig, class_to_idx: dict[str, int]) -> str:
    """A hash of the effective training options and the classes: equal only for the same training."""
    text = json.dumps(
        {"config": config.model_dump(mode="json"), "classes": class_to_idx}, sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()


def run_identity(
    project_id: UUID,
    run_id: str,
    dataset: dict[str, Any],
    config: TrainingConfig,
    class_to_idx: dict[str, int],
    world_size: int = 1,
) -> dict[str, Any]:
    """What a checkpoint must match; the number of processes too (each rank's share of the data and its
    RNG states depend on it)."""
    return {
        "project_id": str(project_id),
        "run_id": run_id,
        "dataset": dataset,
        "options_hash": options_hash(config, class_to_idx),
        "world_size": world_size,
    }
