"""The trained weights (Requirement 5.5) and the resume checkpoints written while training.

A checkpoint lives in the bucket at `checkpoints/tr-{project id}/{run id}/checkpoint.pt`, beside (not among)
the models, so that a Job retry on another node finds it. It belongs to one run (its id is in the path and in
the object's metadata) and carries the run's identity — the dataset object's generation and a hash of the
effective training options and classes — and is only resumed from when that identity matches: a new start
of the project (a new run id) never resumes an old run, and a retry of the same run resumes only while
neither the dataset nor the options changed.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any
from uuid import UUID

import torch
from torch import nn

from training_agent.core.errors import StorageError
from training_agent.core.files import atomic_write
from training_agent.core.sweep import checkpoint_prefix
from training_agent.trainer.owner import RunOwner

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: per-rank RNG states (a run under torchrun)


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the state_dict that keeps its `_metadata`: the per-module versions some modules need
    to load their own state back (torchvision's MNASNet refuses a state without them)."""
    state = model.state_dict()
    copy: OrderedDict[str, torch.Tensor] = OrderedDict(
        (k, v.detach().to("cpu", copy=True)) for k, v in state.items()
    )
    copy._metadata = getattr(state, "_metadata", None)  # type: ignore[attr-defined]
    return copy


def save_state_dict(model: nn.Module, path: Path) -> Path:
    """Save the model's state_dict to `path` atomically, tensors on the CPU."""
    state = cpu_state_dict(model)
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def checkpoint_key(project_id: UUID, run_id: str) -> str:
    """`checkpoints/tr-{project id}/{run id}/checkpoint.pt`: one folder per run, so a sweep removes a
    dead run's checkpoint by its id and nothing else."""
    return checkpoint_prefix(project_id, run_id) + "checkpoint.pt"


class Checkpoints:
    """Save, find and remove one run's checkpoint. Each save is whole or absent: written to a local file
    atomically, then uploaded as one object through the run's owner (a GCS upload replaces an object
    atomically too, and only the generation this run wrote)."""

    def __init__(self, owner: RunOwner, url: str, identity: dict[str, Any]) -> None:
        self.owner = owner
        self.url = url
        self.local = owner.work_dir / "checkpoint.pt"
        self.identity = identity
        self.saved = 0
        self.failures = 0

    def save(self, state: dict[str, Any]) -> bool:
        """Write the checkpoint; a failure is logged, not raised: it only costs a resume, never the run."""
        payload = {"format_version": FORMAT_VERSION, "key": self.identity, "state": state}
        try:
            atomic_write(self.local, lambda tmp: torch.save(payload, tmp))
            self.owner.put(self.local, self.url, if_generation_match=0)
        except (StorageError, OSError) as exc:
            self.failures += 1
            logger.warning("Could not write the checkpoint %s (training goes on): %s", self.url, exc)
            return False
        self.saved += 1
        return True

    def load(self) -> dict[str, Any] | None:
        """The saved training state of this run, or None when there is none (or it is not this run's, or
        the dataset or the options changed since: then it is never trained on top of)."""
        storage = self.owner.storage
        info = storage.stat(self.url)
        if info is None:
            return None
        if not self.owner.owns(info):
            logger.warning("Ignoring the checkpoint %s: another run wrote it", self.url)
            return None
        try:
            storage.download(self.url, self.local)
            # weights_only: a checkpoint is data, never code, even if someone else could write the bucket.
            payload = torch.load(self.local, map_location="cpu", weights_only=True)
        except (StorageError, RuntimeError, OSError, EOFError) as exc:
            logger.warning("Ignoring the unreadable checkpoint %s: %s", self.url, exc)
            return None
        self.owner.adopt(self.url, info)  # this run's own: later saves replace it, a failure removes it
        if payload.get("format_version") != FORMAT_VERSION or payload.get("key") != self.identity:
            logger.warning(
                "Ignoring the checkpoint %s: the dataset or the training options changed since", self.url
            )
            return None
        state: dict[str, Any] = payload["state"]
        return state

    def delete(self) -> None:
        """Remove the checkpoint: the run ended for good (succeeded, or failed in a way no retry mends)."""
        self.owner.discard(self.url)
        self.local.unlink(missing_ok=True)
