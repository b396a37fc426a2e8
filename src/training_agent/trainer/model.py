"""Build a torchvision classifier by name, load pretrained weights, fit its head to the classes
(Requirements 4.1-4.3)."""

from __future__ import annotations

import difflib
import logging
from functools import cache
from pathlib import Path
from typing import Any, cast

import torch
import torchvision
from torch import nn
from torchvision import models

from training_agent.core.errors import InvalidInputError, StepError

logger = logging.getLogger(__name__)

IMAGENET_CLASSES = 1000
# These two build auxiliary classifiers that pretrained checkpoints include; they are loaded, then dropped.
_AUX_LOGITS_MODELS = frozenset({"googlenet", "inception_v3"})


@cache
def available_models() -> tuple[str, ...]:
    """Every torchvision image classification architecture (not detection, video, quantized...)."""
    return tuple(models.list_models(module=torchvision.models))


def check_model_name(name: str) -> None:
    if name not in available_models():
        close = difflib.get_close_matches(name, available_models(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise InvalidInputError(
            f"Unknown model {name!r} in metadata.preferred_model.{hint} Any torchvision classification "
            "model works, e.g. resnet18, efficientnet_b0, mobilenet_v3_large, convnext_tiny, vit_b_16",
            step="validate_config",
        )


def _architecture(name: str, pretrained: bool, extra: dict[str, Any]) -> nn.Module:
    kwargs: dict[str, Any] = dict(extra)
    if name in _AUX_LOGITS_MODELS:
        # Shaped like the pretrained checkpoint (aux heads present) so its state_dict loads strictly.
        kwargs.update(aux_logits=pretrained, init_weights=not pretrained)
    model: nn.Module = models.get_model(name, weights=None, **kwargs)
    return model


def set_batchnorm_momentum(model: nn.Module, momentum: float) -> int:
    """Give every BatchNorm layer at least `momentum`; returns how many were raised.

    Some families (mobilenet_v3 0.01, mnasnet 0.0003) keep running statistics that move very slowly, made
    for hundreds of ImageNet epochs: after a short run their eval-mode statistics still describe the
    initial weights (or ImageNet), and validation accuracy sits near chance while training looks fine.
    """
    raised = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and (module.momentum or 0) < momentum:
            module.momentum = momentum
            raised += 1
    return raised


def _drop_aux_logits(model: nn.Module) -> None:
    if hasattr(model, "aux_logits"):
        model.aux_logits = False  # type: ignore[assignment]
        for attr in ("AuxLogits", "aux1", "aux2"):
            if hasattr(model, attr):
                setattr(model, attr, None)


def hub_weights_hint(name: str) -> str:
    weights = models.get_model_weights(name).DEFAULT
    filename = Path(weights.url).name
    return (
        f"Supply the weights without internet in one of these ways: put {filename} (from {weights.url}) in "
        f"$TORCH_HOME/hub/checkpoints/ (default ~/.cache/torch/hub/checkpoints/); or set "
        f"metadata.weights_url to a gs:// or local path of a {name} state_dict (.pth); or set "
        "metadata.pretrained to false to train from scratch"
    )


def _hub_state_dict(name: str) -> dict[str, torch.Tensor]:
    weights = models.get_model_weights(name).DEFAULT
    try:
        # Reads $TORCH_HOME/hub/checkpoints when the file is there; downloads (and caches) otherwise.
        state: dict[str, torch.Tensor] = weights.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError
        raise StepError(
            f"Cannot get pretrained weights for {name}: {exc}. {hub_weights_hint(name)}", step="build_model"
        ) from exc
    return state


def hub_cache_file(name: str) -> Path:
    """Where torch's hub cache keeps `name`'s default ImageNet weights ($TORCH_HOME/hub/checkpoints/...)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(models.get_model_weights(name).DEFAULT.url).name


def cache_pretrained_weights(name: str) -> Path:
    """Download `name`'s default ImageNet weights into the torch hub cache (what the trainer image bakes in
    for clusters without internet); returns the cached file."""
    check_model_name(name)
    _hub_state_dict(name)
    return hub_cache_file(name)


def _file_state_dict(path: Path, name: str) -> dict[str, torch.Tensor]:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InvalidInputError(
            f"metadata.weights_url is not a loadable {name} state_dict: {exc}", step="build_model"
        ) from exc
    if isinstance(loaded, dict) and "state_dict" in loaded and isinstance(loaded["state_dict"], dict):
        loaded = loaded["state_dict"]  # a training checkpoint rather than a bare state_dict
    if not isinstance(loaded, dict):
        raise InvalidInputError(f"metadata.weights_url holds a {type(loaded).__name__}, not a state_dict")
    return loaded


def replace_head(model: nn.Module, num_classes: int) -> str:
    """Swap the final classification layer for one with `num_classes` outputs; returns its module path.

    torchvision families name it differently (fc, classifier[-1], heads.head, head, a 1x1 conv in
    squeezenet), so the last Linear or Conv2d producing the ImageNet classes is the one replaced.
    """
    last: tuple[str, nn.Module] | None = None
    for name, module in model.named_modules():
        if (isinstance(module, nn.Linear) and module.out_features == IMAGENET_CLASSES) or (
            isinstance(module, nn.Conv2d) and module.out_channels == IMAGENET_CLASSES
        ):
            last = (name, module)
    if last is None:
        raise StepError(f"Cannot find the classification layer of {type(model).__name__}", step="build_model")
    path, old = last
    new: nn.Module
    if isinstance(old, nn.Linear):
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    else:
        assert isinstance(old, nn.Conv2d)
        kernel = cast(tuple[int, int], old.kernel_size)
        new = nn.Conv2d(
            old.in_channels, num_classes, kernel_size=kernel, stride=cast(tuple[int, int], old.stride)
        )
    model.set_submodule(path, new)
    return path


def build_model(
    name: str,
    num_classes: int,
    *,
    pretrained: bool,
    weights_file: Path | None = None,
    kwargs: dict[str, Any] | None = None,
    load_weights: bool = True,
) -> nn.Module:
    """The architecture `name` with pretrained (or given, or no) weights and a `num_classes` head;
    `kwargs` go to torchvision's builder (dropout, zero_init_residual, a ViT's image_size...).
    `load_weights=False`: the architecture those weights need, left at its initial weights."""
    check_model_name(name)
    model = _architecture(name, pretrained or weights_file is not None, kwargs or {})
    if not load_weights:
        state = None
    elif weights_file is not None:
        state = _file_state_dict(weights_file, name)
    elif pretrained:
        state = _hub_state_dict(name)
    else:
        state = None
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise InvalidInputError(
                f"The weights do not fit {name} ({str(exc).splitlines()[0]}); they must be an ImageNet "
                f"{name} state_dict",
                step="build_model",
            ) from exc
    _drop_aux_logits(model)
    head = replace_head(model, num_classes)
    logger.info(
        "Built %s (%s weights), head %s → %d classes",
        name,
        "pretrained" if state else "random",
        head,
        num_classes,
    )
    return model
