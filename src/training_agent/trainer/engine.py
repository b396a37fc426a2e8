"""One epoch of training and one pass of evaluation (Requirements 4.4, 5.3-5.4)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass

import torch
from torch import nn

logger = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class EpochStats:
    loss: float
    images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class EvalStats:
    loss: float
    accuracy: float
    images: int


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on GPUs that support it, a no-op elsewhere: one code path either way."""
    enabled = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def _logits(output: object) -> torch.Tensor:
    # A few architectures return a named tuple in training mode (inception's aux outputs).
    return output if isinstance(output, torch.Tensor) else output.logits  # type: ignore[attr-defined]


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[Batch],
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    epoch: int,
    epochs: int,
    log_every: int,
) -> EpochStats:
    model.train()
    total_loss = 0.0
    images = 0
    steps = len(loader) if isinstance(loader, Sized) else 0
    started = time.perf_counter()
    for step, (cpu_inputs, cpu_targets) in enumerate(loader, start=1):
        inputs = cpu_inputs.to(device, non_blocking=True)
        targets = cpu_targets.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            loss = criterion(_logits(model(inputs)), targets)
        loss.backward()
        optimizer.step()
        batch = targets.size(0)
        total_loss += loss.item() * batch
        images += batch
        if step % log_every == 0 or step == steps:
            elapsed = time.perf_counter() - started
            logger.info(
                "epoch %d/%d step %d/%d loss %.4f %.1f img/s",
                epoch,
                epochs,
                step,
                steps,
                loss.item(),
                images / elapsed if elapsed else 0.0,
            )
    return EpochStats(loss=total_loss / max(images, 1), images=images, seconds=time.perf_counter() - started)


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Iterable[Batch], criterion: nn.Module, device: torch.device
) -> EvalStats:
    model.eval()
    total_loss = 0.0
    correct = 0
    images = 0
    for cpu_inputs, cpu_targets in loader:
        inputs = cpu_inputs.to(device, non_blocking=True)
        targets = cpu_targets.to(device, non_blocking=True)
        with autocast(device):
            logits = _logits(model(inputs))
            loss = criterion(logits, targets)
        total_loss += loss.item() * targets.size(0)
        correct += int((logits.argmax(dim=1) == targets).sum().item())
        images += targets.size(0)
    return EvalStats(loss=total_loss / max(images, 1), accuracy=correct / max(images, 1), images=images)


@dataclass(frozen=True)
class FitOptions:
    epochs: int
    learning_rate: float
    log_every: int


def fit(
    model: nn.Module,
    train_loader: Iterable[Batch],
    val_loader: Iterable[Batch],
    device: torch.device,
    options: FitOptions,
    on_epoch: Callable[[dict[str, float]], None],
) -> list[dict[str, float]]:
    """Adam + cross-entropy for `options.epochs` epochs, validating after each; returns the per-epoch
    history (the same records `on_epoch` receives)."""
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=options.learning_rate)
    history = []
    for epoch in range(1, options.epochs + 1):
        train = train_one_epoch(
            model,
            train_loader,
            criterion,
            optimizer,
            device,
            epoch=epoch,
            epochs=options.epochs,
            log_every=options.log_every,
        )
        val = evaluate(model, val_loader, criterion, device)
        record = {
            "epoch": epoch,
            "train_loss": round(train.loss, 6),
            "val_loss": round(val.loss, 6),
            "val_accuracy": round(val.accuracy, 6),
            "images_per_s": round(train.images_per_s, 2),
            "seconds": round(train.seconds, 3),
        }
        history.append(record)
        on_epoch(record)
    return history
