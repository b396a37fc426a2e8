"""The optimiser and the learning-rate schedule a run trains with.

Weight decay never applies to norm layers' scales, biases, or a transformer's position embeddings and class
token: decaying them pulls normalisation towards zero and costs accuracy, it does not regularise. The
schedule steps per batch: a linear warm-up (Adam's early steps are noisy with fresh heads and no running
statistics) then the decay, so that even a 3-epoch run gets a smooth curve rather than three plateaus.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from training_agent.trainer.engine import FitOptions

# Parameters named like these are embeddings, not weights: no decay (ViT, Swin, MaxViT).
_NO_DECAY_NAMES = ("pos_embedding", "class_token", "relative_position_bias_table", "relative_position")


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Two groups: the weights that decay, and the rest (1-D parameters and embeddings) that never do."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if parameter.ndim <= 1 or any(part in name for part in _NO_DECAY_NAMES):
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, options: FitOptions) -> torch.optim.Optimizer:
    groups = parameter_groups(model, options.weight_decay)
    lr = options.learning_rate
    fused = fused_kernel(model)
    if options.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True, fused=fused)
    if options.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, fused=fused)
    # The seed contract's Adam: L2-style decay when asked for (the default is none).
    return torch.optim.Adam(groups, lr=lr, fused=fused)


def fused_kernel(model: nn.Module) -> bool | None:
    """torch's fused update (one kernel over every parameter) where the parameters' device has one. On a
    CPU torch otherwise loops over the parameters in Python: resnet18 at 32 px, batch 8, one thread, Adam's
    step took 78 ms of a 195 ms training step, and 13 ms of 107 ms fused."""
    parameters = list(model.parameters())
    supported = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in parameters)
    return True if parameters and supported else None  # None: torch's own default


def lr_factor(options: FitOptions, steps_per_epoch: int) -> Callable[[int], float]:
    """The multiplier of the base learning rate at each step (0-based): warm-up, then the schedule."""
    steps_per_epoch = max(steps_per_epoch, 1)
    total = max(options.epochs * steps_per_epoch, 1)
    warmup = min(round(options.lr_warmup_epochs * steps_per_epoch), total - 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if options.lr_schedule == "cosine":
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return 0.5 * (1 + math.cos(math.pi * progress))
        if options.lr_schedule == "step":
            return float(options.lr_gamma ** ((step // steps_per_epoch) // options.lr_step_size))
        return 1.0

    return factor


def make_scheduler(
    optimizer: torch.optim.Optimizer, options: FitOptions, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR | None:
    if options.lr_schedule == "none" and options.lr_warmup_epochs <= 0:
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(options, steps_per_epoch))
