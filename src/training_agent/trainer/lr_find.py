"""A learning-rate range test (the opt-in `lr_find` option): a short run whose learning rate grows
exponentially every step, watching the smoothed training loss. The loss falls fastest a little below the
rate where it is lowest and blows up just above it; a tenth of the rate at the lowest smoothed loss is a
safe, well-tested choice. The model's weights and statistics are put back afterwards: only the rate is kept.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

from torch import nn

from training_agent.trainer.data import Loader
from training_agent.trainer.engine import FitOptions, logits_of
from training_agent.trainer.optim import make_optimizer
from training_agent.trainer.precision import autocast
from training_agent.trainer.preprocess import Preprocess

logger = logging.getLogger(__name__)

START_LR, END_LR = 1e-7, 1.0
SMOOTHING = 0.9  # exponential moving average of the loss
DIVERGED = 4.0  # stop once the smoothed loss is this many times its best
MIN_DROP = 0.9  # below a 10% fall from the first loss, batch-to-batch noise could pass for learning


@dataclass(frozen=True)
class LrFinding:
    learning_rate: float | None  # None: the loss never fell; keep the configured rate
    steps: int
    curve: list[tuple[float, float]]  # (learning rate, smoothed loss), thinned for the logs

    def record(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, "steps": self.steps, "curve": self.curve}


def find_lr(
    model: nn.Module,
    loader: Loader,
    preprocess: Preprocess,
    criterion: nn.Module,
    options: FitOptions,
    *,
    max_steps: int = 100,
) -> LrFinding:
    """Run the range test on the training split: three epochs' worth of batches, at least 30 (cycling
    through a small split) and at most `max_steps`, so that it costs a small share of any run."""
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    steps = max(min(max_steps, 3 * len(loader)), min(30, max_steps), 10)
    optimizer = make_optimizer(model, dataclasses.replace(options, learning_rate=START_LR))
    growth = (END_LR / START_LR) ** (1 / (steps - 1))
    model.train()
    smoothed, best, curve, losses = 0.0, math.inf, [], []
    step = 0
    try:
        while step < steps:
            loader.sampler.set_epoch(10_000 + step)  # an order of its own: the run's epochs are unchanged
            for images, cpu_targets in loader:
                lr = START_LR * growth**step
                for group in optimizer.param_groups:
                    group["lr"] = lr
                inputs = preprocess(images, train=True)
                targets = cpu_targets.to(inputs.device)
                with autocast(inputs.device, options.precision):
                    loss = criterion(logits_of(model(inputs)).float(), targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                value = float(loss.detach())
                smoothed = SMOOTHING * smoothed + (1 - SMOOTHING) * value
                debiased = smoothed / (1 - SMOOTHING ** (step + 1))
                losses.append((lr, debiased))
                step += 1
                if not math.isfinite(debiased) or debiased > DIVERGED * best or step >= steps:
                    break
                best = min(best, debiased)
            else:
                continue
            break
    finally:
        model.load_state_dict(saved)
    finite = [(lr, loss) for lr, loss in losses if math.isfinite(loss)]
    chosen = None
    if len(finite) >= 5:
        lowest_lr, lowest = min(finite, key=lambda point: point[1])
        if lowest < MIN_DROP * finite[0][1]:
            chosen = float(min(max(lowest_lr / 10, 1e-6), 1.0))
    curve = [(round(lr, 10), round(loss, 5)) for lr, loss in finite[:: max(len(finite) // 20, 1)]]
    return LrFinding(chosen, step, curve)
