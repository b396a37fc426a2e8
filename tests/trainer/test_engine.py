"""The training loop: resume equals never stopping, best-val weights, early stopping, schedules, precision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from training_agent.core.errors import ConfigurationError, Interrupted
from training_agent.trainer import engine, precision
from training_agent.trainer.data import CachedLoader, EpochBatchSampler, Loader
from training_agent.trainer.engine import EvalResult, FitOptions, Fitter
from training_agent.trainer.precision import pick_precision
from training_agent.trainer.preprocess import Augmentation, Preprocess

CPU = torch.device("cpu")


def loaders(seed: int = 0) -> dict[str, Loader]:
    generator = torch.Generator().manual_seed(123)
    out: dict[str, Loader] = {}
    for split, n in (("train", 40), ("val", 12), ("test", 12)):
        targets = torch.randint(0, 3, (n,), generator=generator)
        # Learnable: the class sets the mean brightness.
        images = (
            targets.view(-1, 1, 1, 1) * 80 + torch.randint(0, 40, (n, 3, 8, 8), generator=generator)
        ).to(torch.uint8)
        sampler = EpochBatchSampler(n, 8, shuffle=split == "train", seed=seed)
        out[split] = CachedLoader(images, targets, sampler, pin=False)
    return out


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


def fitter(**options: Any) -> Fitter:
    augmentation = Augmentation(min_scale=0.5, hflip=True)
    preprocess = Preprocess(CPU, augmentation=augmentation, seed=1, channels_last=False, num_classes=3)
    values: dict[str, Any] = {"epochs": 3, "learning_rate": 0.01, "log_every": 100}
    values.update(options)
    return Fitter(tiny_model(), loaders(), preprocess, FitOptions(**values))


def weights(fit: Fitter) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in fit.model.state_dict().items()}


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does() -> None:
    straight = fitter()
    straight_history = straight.fit(lambda record: None, lambda: None)

    saved: list[dict[str, Any] | None] = []
    interrupted = fitter()
    steps = {"n": 0}

    def stop_after_seven_steps() -> (
        bool
    ):  # polled after each of the 5 steps of an epoch and at its end: the 7th poll is in epoch 2
        steps["n"] += 1
        return steps["n"] >= 7

    with pytest.raises(Interrupted):
        interrupted.fit(
            lambda record: None, lambda: saved.append(interrupted.state_dict()), stop_after_seven_steps
        )
    assert interrupted.progress.epoch == 2 and interrupted.progress.batches_done == 1

    resumed = fitter()
    state = saved[-1]
    assert state is not None
    resumed.load_state_dict(state)
    history = resumed.fit(lambda record: None, lambda: None)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert [r["val_accuracy"] for r in history] == [r["val_accuracy"] for r in straight_history]
    for name, tensor in weights(straight).items():
        torch.testing.assert_close(weights(resumed)[name], tensor, msg=name)


def test_best_val_weights_are_kept_and_patience_stops_early(monkeypatch: pytest.MonkeyPatch) -> None:
    accuracies = iter([0.5, 0.9, 0.7, 0.6, 0.95])
    snapshots: list[dict[str, torch.Tensor]] = []
    fit = fitter(epochs=5, patience=2)

    def scripted(*args: Any, **kwargs: Any) -> EvalResult:
        snapshots.append(weights(fit))
        empty = torch.empty(0, dtype=torch.int64)
        return EvalResult(loss=1.0, accuracy=next(accuracies), targets=empty, predictions=empty)

    monkeypatch.setattr(engine, "evaluate", scripted)
    history = fit.fit(lambda record: None, lambda: None)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]  # two epochs without a gain after epoch 2
    assert fit.progress.stopped_early and fit.progress.best_epoch == 2
    assert [r["best"] for r in history] == [True, True, False, False]
    for name, tensor in snapshots[1].items():  # the model holds epoch 2's weights again
        torch.testing.assert_close(fit.model.state_dict()[name], tensor, msg=name)


@pytest.mark.parametrize(
    ("schedule", "extra", "expected"),
    [
        ("none", {}, [0.01, 0.01, 0.01, 0.01]),
        ("step", {"lr_step_size": 2, "lr_gamma": 0.5}, [0.01, 0.01, 0.005, 0.005]),
        # Per step (5 per epoch), recorded at each epoch's last step.
        ("cosine", {}, [0.009045, 0.005782, 0.002061, 0.000062]),
        ("cosine", {"lr_warmup_epochs": 1.0}, [0.008333, 0.008346, 0.003455, 0.000109]),
    ],
)
def test_learning_rate_schedules(schedule: str, extra: dict[str, Any], expected: list[float]) -> None:
    history = fitter(epochs=4, lr_schedule=schedule, **extra).fit(lambda record: None, lambda: None)
    assert [round(r["learning_rate"], 6) for r in history] == expected


def test_per_epoch_records_carry_timings_and_memory() -> None:
    [record] = fitter(epochs=1).fit(lambda record: None, lambda: None)
    assert record["images_per_s"] > 0 and record["peak_memory_mib"] > 0
    assert record["data_wait_s"] >= 0 and record["compute_s"] > 0
    assert record["seconds"] == pytest.approx(record["data_wait_s"] + record["compute_s"], abs=0.002)


def test_records_carry_training_accuracy() -> None:
    history = fitter(epochs=2).fit(lambda record: None, lambda: None)
    assert all(0 <= record["train_accuracy"] <= 1 for record in history)


def test_gradient_clipping_and_mixup_train(monkeypatch: pytest.MonkeyPatch) -> None:
    clipped: list[float] = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def spy(parameters: Any, max_norm: float) -> torch.Tensor:
        clipped.append(max_norm)
        return real_clip(parameters, max_norm)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    fit = fitter(epochs=1, grad_clip_norm=0.5, optimizer="adamw", weight_decay=0.05)
    fit.preprocess = Preprocess(
        CPU,
        augmentation=Augmentation(mixup_alpha=0.2, cutmix_alpha=1.0),
        seed=1,
        channels_last=False,
        num_classes=3,
    )
    [record] = fit.fit(lambda record: None, lambda: None)
    assert clipped == [0.5] * 5 and record["train_loss"] > 0
    decay, no_decay = fit.optimizer.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim <= 1 for p in no_decay["params"])


def test_loss_options_reach_the_criterion() -> None:
    fit = fitter(label_smoothing=0.1, class_weights=(1.0, 2.0, 0.5))
    assert fit.criterion.label_smoothing == 0.1
    assert fit.criterion.weight is not None and fit.criterion.weight.tolist() == [1.0, 2.0, 0.5]
    assert fit.eval_criterion.weight is None  # reported losses stay comparable between runs


def test_precision_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pick_precision(CPU, "fp32") == "fp32"
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    assert pick_precision(CPU, "auto") == "bf16"
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
    assert pick_precision(CPU, "auto") == "fp32"
    with pytest.raises(ConfigurationError, match="TRAINING_AGENT_PRECISION=bf16"):
        pick_precision(CPU, "bf16")
    with pytest.raises(ConfigurationError, match="fp16 is for GPUs"):
        pick_precision(CPU, "fp16")


@pytest.mark.parametrize(
    ("bf16", "setting", "chosen"), [(True, "auto", "bf16"), (False, "auto", "fp16"), (True, "fp16", "fp16")]
)
def test_gpus_without_bf16_get_fp16_with_a_loss_scaler(
    monkeypatch: pytest.MonkeyPatch, bf16: bool, setting: Any, chosen: str
) -> None:
    """A T4 or V100 has fp16 tensor cores and no bf16: `auto` picks fp16 there (and the Fitter scales)."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    assert pick_precision(torch.device("cuda", 0), setting) == chosen


def test_fp16_steps_go_through_the_loss_scaler() -> None:
    """The fp16 path (a GPU's, run here on the CPU's fp16 autocast): scaled backward, unscaled clipping,
    a scaler state in the checkpoint that a resume loads."""
    fit = fitter(epochs=1, precision="fp16", grad_clip_norm=1.0)
    assert fit.scaler.is_enabled()
    history = fit.fit(lambda record: None, lambda: None)
    assert history[0]["train_loss"] == history[0]["train_loss"]  # not NaN
    state = fit.state_dict()
    assert state is not None and state["scaler"]["scale"] > 0
    again = fitter(epochs=1, precision="fp16")
    again.load_state_dict(state)
    assert again.scaler.get_scale() == fit.scaler.get_scale()


def test_bf16_training_runs_on_this_cpu_when_supported() -> None:
    if not precision.cpu_supports_bf16():
        pytest.skip("this CPU has no AVX512-BF16/AMX")
    history = fitter(epochs=1, precision="bf16").fit(lambda record: None, lambda: None)
    assert history[0]["train_loss"] == history[0]["train_loss"]  # not NaN


def test_best_weights_load_back_into_models_that_check_their_state_version(tmp_path: Path) -> None:
    """MNASNet refuses a state_dict without the per-module version metadata; the best-epoch copy and the
    saved file keep it."""
    from torchvision import models

    from training_agent.trainer.checkpoint import cpu_state_dict, save_state_dict

    model = models.mnasnet0_5(num_classes=3)
    model.load_state_dict(cpu_state_dict(model))
    saved = save_state_dict(model, tmp_path / "model.pth")
    models.mnasnet0_5(num_classes=3).load_state_dict(torch.load(saved, weights_only=True))
