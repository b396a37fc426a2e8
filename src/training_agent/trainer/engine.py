"""The training loop: one AMP code path, per-epoch timings, best-val weights, early stopping, LR schedules,
and a state that a checkpoint can capture at any step and a restarted trainer can resume from.
"""

from __future__ import annotations

import logging
import math
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from training_agent.core.errors import Interrupted
from training_agent.trainer.checkpoint import cpu_state_dict
from training_agent.trainer.data import Loader
from training_agent.trainer.group import SOLO, Group
from training_agent.trainer.optim import make_optimizer, make_scheduler
from training_agent.trainer.precision import Precision, autocast
from training_agent.trainer.preprocess import Preprocess
from training_agent.trainer.progress import PROGRESS_LINE, Step

logger = logging.getLogger(__name__)


def logits_of(output: object) -> torch.Tensor:
    # A few architectures return a named tuple in training mode (inception's aux outputs).
    return output if isinstance(output, torch.Tensor) else output.logits  # type: ignore[attr-defined]


def peak_memory_mib(device: torch.device) -> float:
    """Peak GPU memory allocated since the last reset, or the process's peak resident memory on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


# -- evaluation -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalResult:
    loss: float
    accuracy: float
    targets: torch.Tensor
    predictions: torch.Tensor


@torch.no_grad()
def evaluate(
    forward: Callable[[torch.Tensor], Any],
    model: nn.Module,
    loader: Loader,
    preprocess: Preprocess,
    criterion: nn.Module,
    *,
    precision: Precision,
    group: Group = SOLO,
) -> EvalResult:
    """The model on a split; under torchrun each rank evaluates its share and every rank gets the whole
    result (so that all agree on the best epoch and on stopping early)."""
    model.eval()
    loader.sampler.set_epoch(1)
    device = preprocess.device
    total_loss = torch.zeros((), device=device)
    targets_seen, predictions = [], []
    for images, cpu_targets in loader:
        inputs = preprocess(images, train=False)
        targets = cpu_targets.to(device, non_blocking=True)
        with autocast(device, precision):
            logits = logits_of(forward(inputs))
            loss = criterion(logits.float(), targets)
        total_loss += loss * targets.size(0)
        predictions.append(logits.argmax(dim=1).cpu())
        targets_seen.append(cpu_targets)
    all_targets = torch.cat(targets_seen) if targets_seen else torch.empty(0, dtype=torch.int64)
    all_predictions = torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.int64)
    loss_sum = float(total_loss)
    if group.distributed:
        shares = group.gather((loss_sum, all_targets, all_predictions))
        loss_sum = sum(share[0] for share in shares)
        all_targets = torch.cat([share[1] for share in shares])
        all_predictions = torch.cat([share[2] for share in shares])
    count = max(all_targets.numel(), 1)
    return EvalResult(
        loss=loss_sum / count,
        accuracy=float((all_predictions == all_targets).sum()) / count,
        targets=all_targets,
        predictions=all_predictions,
    )


# -- training ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FitOptions:
    epochs: int
    learning_rate: float
    log_every: int = 10
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = 0.0
    lr_schedule: Literal["none", "cosine", "step"] = "none"
    lr_warmup_epochs: float = 0.0
    lr_step_size: int = 1
    lr_gamma: float = 0.1
    label_smoothing: float = 0.0
    grad_clip_norm: float | None = None
    class_weights: tuple[float, ...] | None = None
    patience: int | None = None
    precision: Precision = "fp32"
    compile: bool = False


@dataclass
class Progress:
    """Where the run is: checkpointed, so a restart continues from here rather than from epoch 1."""

    epoch: int = 1  # the epoch in progress, 1-based
    batches_done: int = 0  # of that epoch
    loss_sum: float = 0.0
    correct: int = 0  # training predictions that matched their (unmixed) label
    images: int = 0
    data_wait_s: float = 0.0
    compute_s: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_accuracy: float = -1.0
    best_loss: float = math.inf
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    stopped_early: bool = False

    def start_epoch(self) -> None:
        self.batches_done, self.loss_sum, self.images, self.correct = 0, 0.0, 0, 0
        self.data_wait_s = self.compute_s = 0.0


class Fitter:
    """Adam + cross-entropy over the training split, validating after every epoch; keeps the weights of
    the best validation accuracy (lower val loss breaks ties) and puts them back in the model at the end."""

    def __init__(
        self,
        model: nn.Module,
        loaders: dict[str, Loader],
        preprocess: Preprocess,
        options: FitOptions,
        group: Group = SOLO,
    ) -> None:
        self.model = model
        self.loaders = loaders
        self.preprocess = preprocess
        self.device = preprocess.device
        self.options = options
        self.group = group
        # Compiling wraps the module; state_dicts are always taken from the plain one (no `_orig_mod.`).
        # Evaluation runs the plain module: each rank its own share, with no collective inside.
        self.forward: Callable[[torch.Tensor], Any] = torch.compile(model) if options.compile else model
        self.train_forward = self.forward
        if group.distributed:
            # DDP starts every rank from rank 0's weights and averages the gradients at every step.
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            ddp = DistributedDataParallel(model, device_ids=device_ids)
            self.train_forward = torch.compile(ddp) if options.compile else ddp
        weights = None
        if options.class_weights is not None:
            weights = torch.tensor(options.class_weights, dtype=torch.float32, device=self.device)
        self.criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=options.label_smoothing)
        self.eval_criterion = nn.CrossEntropyLoss()
        self.optimizer = make_optimizer(model, options)
        # fp16 only: scales the loss up before backward and the gradients down before the step, skipping
        # steps whose gradients overflowed.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=options.precision == "fp16")
        self.scheduler = make_scheduler(self.optimizer, options, len(loaders["train"]))
        self.progress = Progress()
        self.last_lr = options.learning_rate
        self.best_state: dict[str, torch.Tensor] | None = None

    # -- checkpoint state -------------------------------------------------------------------------------
    def _rank_state(self) -> dict[str, Any]:
        """What differs between ranks: their augmentation draws and RNGs."""
        return {
            "preprocess": self.preprocess.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": [torch.cuda.get_rng_state(self.device)] if self.device.type == "cuda" else [],
            },
        }

    def state_dict(self) -> dict[str, Any] | None:
        """The state a checkpoint keeps, on the leading rank (None on the others). Under torchrun every
        rank must call it at the same point: each hands its own RNG states to rank 0."""
        ranks = self.group.gather(self._rank_state())
        if not self.group.leads:
            return None
        return {
            "model": cpu_state_dict(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "progress": asdict(self.progress),
            # Right after an improving epoch the best weights are the model's: not stored twice.
            "best_state": None if self._best_is_model() else self.best_state,
            "scaler": self.scaler.state_dict(),
            "ranks": ranks,
        }

    def _best_is_model(self) -> bool:
        progress = self.progress
        return progress.best_epoch == progress.epoch - 1 and progress.batches_done == 0

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.progress = Progress(**state["progress"])
        if not self.group.leads:
            # The epoch's partial sums saved are already all ranks' (`_reduce_partials`): rank 0 holds them.
            self.progress.loss_sum, self.progress.correct, self.progress.images = 0.0, 0, 0
        self.best_state = state["best_state"]
        if self.best_state is None and self.progress.best_epoch > 0:
            self.best_state = cpu_state_dict(self.model)
        # The checkpoint's world size is this run's (it is part of the run's identity).
        mine = state["ranks"][self.group.rank]
        self.preprocess.load_state_dict(mine["preprocess"])
        torch.set_rng_state(mine["rng"]["torch"])
        if self.device.type == "cuda" and mine["rng"]["cuda"]:
            torch.cuda.set_rng_state(mine["rng"]["cuda"][0], self.device)

    # -- the loop ---------------------------------------------------------------------------------------
    def fit(
        self,
        on_epoch: Callable[[dict[str, Any]], None],
        checkpoint: Callable[[], None],
        stop_requested: Callable[[], bool] = lambda: False,
        on_step: Callable[[Step], None] = lambda step: None,
    ) -> list[dict[str, Any]]:
        """Train until the last epoch or early stopping. `checkpoint` is called after every epoch and when
        a stop is requested (then `Interrupted` is raised); `on_epoch` gets each epoch's record, `on_step`
        where the epoch is after every batch (and at its start), so progress shows within an epoch."""
        progress = self.progress
        while progress.epoch <= self.options.epochs and not progress.stopped_early:
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            self._train_epoch(checkpoint, stop_requested, on_step)
            record = self._finish_epoch()
            checkpoint()
            on_epoch(record)
            more = progress.epoch <= self.options.epochs and not progress.stopped_early
            if self.group.any(stop_requested()) and more:
                raise Interrupted(f"stopped after epoch {progress.epoch - 1}")
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return progress.history

    def _train_epoch(
        self,
        checkpoint: Callable[[], None],
        stop_requested: Callable[[], bool],
        on_step: Callable[[Step], None],
    ) -> None:
        progress, options, device = self.progress, self.options, self.device
        loader = self.loaders["train"]
        loader.sampler.set_epoch(progress.epoch, skip=progress.batches_done)
        steps = len(loader)
        # Images so far over all ranks (each rank trains as many per step), for the live progress.
        scale = self.group.world_size
        on_step(Step(progress.epoch, options.epochs, progress.batches_done, steps, progress.images * scale))
        self.model.train()
        loss_sum = torch.zeros((), device=device)  # summed on the device: no sync per step
        correct = torch.zeros((), device=device)
        started = tick = time.perf_counter()
        for images, cpu_targets in loader:
            fetched = time.perf_counter()
            progress.data_wait_s += fetched - tick
            inputs = self.preprocess(images, train=True)
            targets = cpu_targets.to(device, non_blocking=True)
            inputs, mixed_targets = self.preprocess.mix(inputs, targets)
            with autocast(device, options.precision):
                logits = logits_of(self.train_forward(inputs)).float()
                loss = self.criterion(logits, mixed_targets)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if options.grad_clip_norm is not None:
                self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), options.grad_clip_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.last_lr = self.optimizer.param_groups[0]["lr"]
            if self.scheduler is not None:
                self.scheduler.step()  # per step: the warm-up and the cosine are smooth even in short runs
            loss_sum += loss.detach() * targets.size(0)
            correct += (logits.detach().argmax(dim=1) == targets).sum()
            progress.images += targets.size(0)
            progress.batches_done += 1
            tick = time.perf_counter()
            progress.compute_s += tick - fetched
            done = progress.batches_done
            on_step(Step(progress.epoch, options.epochs, done, steps, progress.images * scale))
            if progress.batches_done % options.log_every == 0 or progress.batches_done == steps:
                self._log_step(progress.loss_sum + float(loss_sum), steps, time.perf_counter() - started)
            # Every rank stops at the same step (a rank left alone would wait at the next all-reduce).
            if self.group.any(stop_requested()) and progress.batches_done < steps:
                progress.loss_sum += float(loss_sum)
                progress.correct += int(correct)
                self._reduce_partials()
                checkpoint()
                raise Interrupted(f"stopped at epoch {progress.epoch}, batch {progress.batches_done}/{steps}")
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # queued kernels belong to this epoch's compute time
            progress.compute_s += time.perf_counter() - tick
        progress.loss_sum += float(loss_sum)
        progress.correct += int(correct)
        self._reduce_partials()

    def _reduce_partials(self) -> None:
        """The epoch's loss, correct predictions and images summed over the ranks, on every rank."""
        if not self.group.distributed:
            return
        progress = self.progress
        loss_sum, correct, images = self.group.sum([progress.loss_sum, progress.correct, progress.images])
        progress.loss_sum, progress.correct, progress.images = loss_sum, int(correct), int(images)

    def _log_step(self, loss_sum: float, steps: int, elapsed: float) -> None:
        progress = self.progress
        logger.info(
            "epoch %d/%d step %d/%d loss %.4f %.1f img/s",
            progress.epoch,
            self.options.epochs,
            progress.batches_done,
            steps,
            loss_sum / max(progress.images, 1),
            progress.images * self.group.world_size / elapsed if elapsed > 0 else 0.0,
            extra={PROGRESS_LINE: True},  # a terminal's progress bar shows this instead (progress_bar.py)
        )

    def evaluate(self, split: str) -> EvalResult:
        """The model as it is on `split` (all of it, on every rank)."""
        return evaluate(
            self.forward,
            self.model,
            self.loaders[split],
            self.preprocess,
            self.eval_criterion,
            precision=self.options.precision,
            group=self.group,
        )

    def _finish_epoch(self) -> dict[str, Any]:
        progress = self.progress
        val = self.evaluate("val")
        seconds = progress.data_wait_s + progress.compute_s
        improved = val.accuracy > progress.best_accuracy or (
            val.accuracy == progress.best_accuracy and val.loss < progress.best_loss
        )
        if improved:
            progress.best_accuracy, progress.best_loss, progress.best_epoch = (
                val.accuracy,
                val.loss,
                progress.epoch,
            )
            progress.epochs_without_improvement = 0
            self.best_state = cpu_state_dict(self.model)
        else:
            progress.epochs_without_improvement += 1
        record = {
            "epoch": progress.epoch,
            "train_loss": round(progress.loss_sum / max(progress.images, 1), 6),
            "train_accuracy": round(progress.correct / max(progress.images, 1), 6),
            "val_loss": round(val.loss, 6),
            "val_accuracy": round(val.accuracy, 6),
            "learning_rate": round(self.last_lr, 8),  # at the epoch's last step
            "images_per_s": round(progress.images / seconds, 2) if seconds > 0 else 0.0,
            "seconds": round(seconds, 3),
            "data_wait_s": round(progress.data_wait_s, 3),
            "compute_s": round(progress.compute_s, 3),
            "peak_memory_mib": round(peak_memory_mib(self.device), 1),
            "best": improved,
        }
        progress.history.append(record)
        patience = self.options.patience
        if patience is not None and progress.epochs_without_improvement >= patience:
            progress.stopped_early = True
            logger.info("No val accuracy gain for %d epochs: stopping early", patience)
        progress.epoch += 1
        progress.start_epoch()
        return record
