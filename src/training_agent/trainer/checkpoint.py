"""The trained weights (Requirement 5.5) and the resume checkpoints written while training.

A checkpoint lives in the bucket at `checkpoints/{run name}/checkpoint.pt`, beside (not among) the models,
so that a Job retry on another node finds it. It carries a key — the claim it belongs to, the architecture,
the classes and the training options — and is only resumed from when the key matches: a checkpoint left by
an earlier, failed run of the same project is ignored and overwritten.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training_agent.core.errors import StorageError
from training_agent.core.files import atomic_write
from training_agent.core.storage import ObjectStorage

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


def save_state_dict(model: nn.Module, path: Path) -> Path:
    """Save the model's state_dict to `path` atomically, tensors on the CPU."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def checkpoint_key(run_name: str) -> str:
    return f"checkpoints/{run_name}/checkpoint.pt"


class Checkpoints:
    """Save, find and remove one run's checkpoint. Each save is whole or absent: written to a local file
    atomically, then uploaded as one object (a GCS upload replaces an object atomically too)."""

    def __init__(self, storage: ObjectStorage, url: str, work_dir: Path, key: dict[str, Any]) -> None:
        self.storage = storage
        self.url = url
        self.local = work_dir / "checkpoint.pt"
        self.key = key
        self.saved = 0
        self.failures = 0

    def save(self, state: dict[str, Any]) -> bool:
        """Write the checkpoint; a failure is logged, not raised: it only costs a resume, never the run."""
        payload = {"format_version": FORMAT_VERSION, "key": self.key, "state": state}
        try:
            atomic_write(self.local, lambda tmp: torch.save(payload, tmp))
            self.storage.upload(self.local, self.url)
        except (StorageError, OSError) as exc:
            self.failures += 1
            logger.warning("Could not write the checkpoint %s (training goes on): %s", self.url, exc)
            return False
        self.saved += 1
        return True

    def load(self) -> dict[str, Any] | None:
        """The saved training state, or None when there is none for this run (or it belongs to another)."""
        if not self.storage.exists(self.url):
            return None
        try:
            self.storage.download(self.url, self.local)
            # weights_only: a checkpoint is data, never code, even if someone else could write the bucket.
            payload = torch.load(self.local, map_location="cpu", weights_only=True)
        except (StorageError, RuntimeError, OSError, EOFError) as exc:
            logger.warning("Ignoring the unreadable checkpoint %s: %s", self.url, exc)
            return None
        if payload.get("format_version") != FORMAT_VERSION or payload.get("key") != self.key:
            logger.warning(
                "Ignoring the checkpoint %s: it belongs to another run or other settings", self.url
            )
            return None
        state: dict[str, Any] = payload["state"]
        return state

    def delete(self) -> None:
        """Remove the checkpoint: the run ended for good (succeeded, or failed in a way no retry mends)."""
        try:
            self.storage.delete(self.url)
        except StorageError as exc:  # a leftover checkpoint is harmless: its key will not match again
            logger.warning("Could not remove the checkpoint %s: %s", self.url, exc)
        self.local.unlink(missing_ok=True)
