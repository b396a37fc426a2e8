"""The learning-rate range test: a usable rate from a learnable problem, the model left as it was."""

from __future__ import annotations

import torch
from torch import nn

from tests.trainer.test_engine import loaders, tiny_model
from training_agent.trainer.engine import FitOptions
from training_agent.trainer.lr_find import find_lr
from training_agent.trainer.preprocess import Augmentation, Preprocess

CPU = torch.device("cpu")


def test_range_test_picks_a_rate_and_restores_the_model() -> None:
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    preprocess = Preprocess(CPU, augmentation=Augmentation(enabled=False), seed=0, channels_last=False)
    options = FitOptions(epochs=1, learning_rate=0.001, optimizer="adamw")
    finding = find_lr(model, loaders()["train"], preprocess, nn.CrossEntropyLoss(), options, max_steps=60)
    assert finding.learning_rate is not None and 1e-6 <= finding.learning_rate <= 1.0
    assert finding.steps <= 60 and 5 <= len(finding.curve) <= 30
    lrs = [lr for lr, _loss in finding.curve]
    assert lrs == sorted(lrs)  # the rate only grows
    for name, tensor in model.state_dict().items():  # weights and BatchNorm statistics put back
        torch.testing.assert_close(tensor, before[name], msg=name)
    assert finding.record()["learning_rate"] == finding.learning_rate


def test_a_loss_that_never_falls_keeps_the_configured_rate() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    bias = nn.Parameter(torch.zeros(1))  # one trainable parameter that changes nothing

    class Frozen(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner, self.bias = model, bias

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.inner(x) + 0 * self.bias
            return out

    preprocess = Preprocess(CPU, augmentation=Augmentation(enabled=False), seed=0, channels_last=False)
    options = FitOptions(epochs=1, learning_rate=0.001)
    finding = find_lr(Frozen(), loaders()["train"], preprocess, nn.CrossEntropyLoss(), options, max_steps=20)
    assert finding.learning_rate is None
