"""Write the trained weights (Requirement 5.5)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from training_agent.core.files import atomic_write


def save_state_dict(model: nn.Module, path: Path) -> Path:
    """Save the model's state_dict to `path` atomically, tensors on the CPU."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_write(path, lambda tmp: torch.save(state, tmp))
