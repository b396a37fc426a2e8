"""The optimiser: torch's fused update where the device has one, doing what the per-parameter loop does."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training_agent.trainer import optim
from training_agent.trainer.engine import FitOptions
from training_agent.trainer.optim import make_optimizer


def small_net() -> nn.Module:
    torch.manual_seed(0)
    # No bias before the BatchNorm: its gradient would be rounding noise, which Adam scales up to full steps.
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 3))


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_every_optimiser_is_fused_on_a_cpu_and_steps_like_the_loop(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = FitOptions(epochs=1, learning_rate=0.01, optimizer=name, weight_decay=0.05)  # type: ignore[arg-type]
    fused_net, loop_net = small_net(), small_net()
    fused = make_optimizer(fused_net, options)
    assert fused.defaults["fused"] is True
    monkeypatch.setattr(optim, "fused_kernel", lambda model: None)
    loop = make_optimizer(loop_net, options)
    assert loop.defaults["fused"] is None
    batch = torch.randn(4, 3, 8, 8)
    for net, optimizer in ((fused_net, fused), (loop_net, loop)):
        for _ in range(3):
            optimizer.zero_grad()
            net(batch).square().mean().backward()
            optimizer.step()
    for a, b in zip(fused_net.parameters(), loop_net.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_parameters_on_a_device_without_a_fused_kernel_use_torchs_default() -> None:
    net = small_net().to(torch.float64)  # fused kernels are for float parameters of every width...
    assert make_optimizer(net, FitOptions(epochs=1, learning_rate=0.01)).defaults["fused"] is True
    meta = small_net().to("meta")  # ...on CPUs and CUDA GPUs only
    assert make_optimizer(meta, FitOptions(epochs=1, learning_rate=0.01)).defaults["fused"] is None
