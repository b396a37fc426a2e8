"""The smoke check before a model is handed on: the saved file, read back from the bucket, loads into a
fresh model of the recorded architecture and predicts what the trained model predicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from training_agent.core.errors import StepError
from training_agent.trainer.model import build_model

# The trained model may have run on a GPU with TF32 convolutions; the reload runs in fp32 on the CPU.
# Near-ties can flip, a broken file cannot agree this often.
MIN_AGREEMENT = 0.9


@torch.no_grad()
def smoke_check(
    weights: Path,
    architecture: str,
    num_classes: int,
    trained: nn.Module,
    inputs: torch.Tensor,
    *,
    kwargs: dict[str, Any] | None = None,
) -> float:
    """Raise StepError unless the file at `weights` reproduces `trained`'s predictions on `inputs` (a
    preprocessed batch); returns the share of predictions that agree."""
    try:
        fresh = build_model(architecture, num_classes, pretrained=False, kwargs=kwargs)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        fresh.load_state_dict(state)
    except Exception as exc:
        raise StepError(
            f"The saved model does not load into a fresh {architecture}: {exc}", step="verify"
        ) from exc
    fresh.eval()
    trained.eval()
    cpu_inputs = inputs.float().cpu().contiguous()
    reloaded = fresh(cpu_inputs)
    if reloaded.shape != (inputs.size(0), num_classes) or not torch.isfinite(reloaded).all():
        raise StepError(
            f"The reloaded model gives outputs of shape {tuple(reloaded.shape)} (or non-finite values), "
            f"expected ({inputs.size(0)}, {num_classes})",
            step="verify",
        )
    device = next(trained.parameters()).device
    expected = trained(inputs.to(device).float()).argmax(dim=1).cpu()
    agreement = float((reloaded.argmax(dim=1) == expected).float().mean())
    if agreement < MIN_AGREEMENT:
        raise StepError(
            f"The reloaded model agrees with the trained one on only {agreement:.0%} of a test batch",
            step="verify",
        )
    return agreement
