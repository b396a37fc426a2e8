"""Training recipes: what a run uses for every option its project did not set.

Two recipes (the metadata key `recipe`):

- `seed` (the default) keeps the seed contract where it speaks (Adam at 0.001, batch 32, 224x224, the
  metadata's epochs) and fills the open space well: warm-up then cosine, label smoothing, class weights on
  imbalanced data, gradient clipping, and the family's construction choices below.
- `auto` also picks what the contract fixes: the family's optimiser and learning rate (scaled to the batch),
  a batch sized to the images, the image size from the data's own median size, and early stopping with the
  epochs as a ceiling.

Everything per family is data in `FAMILIES`, not code paths. An option the project set always wins; the
model metadata records the recipe, what the project set and every value chosen here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from torchvision import models

from training_agent.core.errors import InvalidInputError
from training_agent.trainer.config import Optimizer, TrainingConfig

STEP = "validate_config"
REFERENCE_BATCH = 64  # the batch the families' learning rates below are for
AUTO_EPOCHS = 30  # `auto` with no `epochs`: a ceiling that early stopping cuts short
MIN_STEPS_PER_EPOCH = 16  # `auto` keeps batches small enough for this many steps per epoch
IMBALANCE_RATIO = 3.0  # largest / smallest class from which the loss is class-weighted by default


@dataclass(frozen=True)
class Family:
    """One torchvision family's choices. `kwargs` go to the builder (dropout: it changes no weight shapes,
    so pretrained weights still load)."""

    name: str
    prefixes: tuple[str, ...]
    optimizer: Optimizer = "adamw"
    lr_scratch: float = 3e-3
    lr_pretrained: float = 5e-4
    weight_decay: float = 0.05
    grad_clip_norm: float = 5.0
    # The smallest sensible input side from scratch (families that downsample 32x to 1x1 lose too much
    # below it); pretrained weights want at least `pretrained_min_size`.
    scratch_min_size: int = 32
    pretrained_min_size: int = 96
    # The smallest input the architecture runs at, where torchvision's weights metadata says more than the
    # architecture needs (swin: 224 there, but its windows pad any size).
    min_size: int | None = None
    # The input side is fixed by the pretrained weights' position embeddings or partitions (vit, maxvit).
    fixed_size: bool = False
    # vit from scratch: built for the chosen size, which must be a multiple of the patch.
    size_kwarg: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    # The largest batch `auto` picks: the mobile families need more, smaller steps early on (from scratch on
    # digits, 3 epochs: mobilenet_v3_small 0.96 test accuracy at batch 32, 0.49 at 64).
    max_batch: int = 256


# Zero-initialised residual branches (`zero_init_residual`) were measured and left off: they help long
# large-batch runs, but in the short runs a project gets they slowed learning (alpha-channel test set, 48
# steps from scratch: 0.88-0.97 test accuracy over 3 seeds with them, 1.0 without).
FAMILIES: tuple[Family, ...] = (
    Family("resnet", ("resnet",)),
    Family("resnext", ("resnext",)),
    Family("wide_resnet", ("wide_resnet",)),
    Family("mobilenet_v2", ("mobilenet_v2",), scratch_min_size=64, max_batch=32, kwargs={"dropout": 0.2}),
    Family("mobilenet_v3", ("mobilenet_v3",), scratch_min_size=64, max_batch=32, kwargs={"dropout": 0.2}),
    Family("efficientnet", ("efficientnet_b",), scratch_min_size=64, max_batch=32),
    Family("efficientnet_v2", ("efficientnet_v2",), scratch_min_size=64, max_batch=32),
    # From scratch at 32 px its stem and four stride-2 stages leave a 1x1 map before the last stage (digits,
    # 3 epochs: 0.75 test accuracy at 32 px, 0.92 at 64).
    Family("regnet", ("regnet",), scratch_min_size=64),
    Family("convnext", ("convnext",), lr_scratch=1e-3, lr_pretrained=1e-4, grad_clip_norm=1.0),
    Family("densenet", ("densenet",)),
    Family("shufflenet", ("shufflenet",), scratch_min_size=64, max_batch=32),
    # No normalisation anywhere, and a 1x1-conv classifier after dropout 0.5: a gentler rate keeps its ReLUs
    # alive from scratch (2e-3 left every output dead), and it needs many small steps early on (digits, 3
    # epochs from scratch: 0.33 test accuracy at batch 64, 0.65 at 32, 0.74 at 16).
    Family(
        "squeezenet",
        ("squeezenet",),
        lr_scratch=5e-4,
        lr_pretrained=2e-4,
        weight_decay=5e-4,
        scratch_min_size=64,
        max_batch=16,
    ),
    Family("mnasnet", ("mnasnet",), scratch_min_size=64, max_batch=32, kwargs={"dropout": 0.2}),
    # A ViT from scratch has no convolutional prior to lean on: it wants a low rate and many small steps
    # (ViT-B/16 on digits at 64 px, 3 epochs from scratch: 0.27 test accuracy at batch 64 and 5e-4, 0.55 at
    # batch 64 and 1e-4, 0.72 at batch 16 and 2.5e-4, 0.75 at batch 16 and 1e-4; DeiT's rule, 5e-4 per 512
    # images, gives 6e-5 at batch 64).
    Family(
        "vit",
        ("vit_",),
        lr_scratch=2e-4,
        lr_pretrained=5e-5,
        grad_clip_norm=1.0,
        scratch_min_size=64,
        fixed_size=True,
        size_kwarg="image_size",
        max_batch=16,
    ),
    Family("swin", ("swin_",), lr_scratch=1e-3, lr_pretrained=1e-4, grad_clip_norm=1.0, min_size=32),
    # Attention over 7x7 partitions fixes its input at 224 px. From scratch it learns like a ViT: the vit
    # family's low rate and small steps (digits, 3 epochs: chance after 2 at batch 32 and 7e-4; 0.76 test
    # accuracy at batch 16 and 1e-4).
    Family(
        "maxvit",
        ("maxvit",),
        lr_scratch=2e-4,
        lr_pretrained=1e-4,
        grad_clip_norm=1.0,
        fixed_size=True,
        max_batch=16,
    ),
    Family("alexnet", ("alexnet",), lr_scratch=3e-4, lr_pretrained=1e-4, scratch_min_size=64),
    Family("vgg", ("vgg",), lr_scratch=3e-4, lr_pretrained=1e-4),
    Family("googlenet", ("googlenet",)),
    Family("inception", ("inception",), scratch_min_size=96),
)
DEFAULT_FAMILY = Family("other", ())


def family_of(model: str) -> Family:
    """The family whose name prefix matches `model` (the longest prefix wins), else the generic one."""
    matches = [(len(p), f) for f in FAMILIES for p in f.prefixes if model.startswith(p)]
    return max(matches, key=lambda m: m[0])[1] if matches else DEFAULT_FAMILY


@cache
def native_size(model: str) -> int:
    """The input side the model's ImageNet weights were evaluated at (224 for most, 384 for efficientnet_v2_s,
    518 for vit_h_14)."""
    weights = models.get_model_weights(model).DEFAULT
    crop = getattr(weights.transforms(), "crop_size", [224])
    return int(crop[0])


def minimum_size(model: str, *, pretrained: bool = True) -> int:
    """The smallest input the architecture accepts (torchvision's `min_size` for its weights, unless the
    family knows better; a ViT from scratch is built for its size, so only its patch limits it)."""
    family = family_of(model)
    if family.size_kwarg and not pretrained:
        return _vit_patch(model)
    if family.min_size is not None:
        return family.min_size
    return _weights_min_size(model)


@cache
def _weights_min_size(model: str) -> int:
    weights = models.get_model_weights(model).DEFAULT
    return int(weights.meta.get("min_size", (1, 1))[0])


@dataclass(frozen=True)
class DataStats:
    """What the recipe reads off the dataset: the training images' count and median side, the class sizes."""

    train_images: int
    median_side: int | None
    class_counts: tuple[int, ...]

    @property
    def imbalance(self) -> float:
        counts = [c for c in self.class_counts if c > 0]
        return max(counts) / min(counts) if counts else 1.0


@dataclass(frozen=True)
class Resolved:
    """The options a run uses, and how each was arrived at (for the logs and the model metadata)."""

    config: TrainingConfig
    family: Family
    build_kwargs: dict[str, Any]  # to the torchvision builder
    shape_kwargs: dict[str, Any]  # the subset that changes weight shapes: needed to rebuild the model
    grad_clip_norm: float
    class_weighted: bool
    chosen: dict[str, Any]
    set_by_project: tuple[str, ...]

    def record(self) -> dict[str, Any]:
        return {
            "name": self.config.recipe,
            "family": self.family.name,
            "set_by_project": list(self.set_by_project),
            "chosen": self.chosen,
            "builder_kwargs": self.build_kwargs,
        }


def _pow2_floor(x: float) -> int:
    return 1 << max(0, math.floor(math.log2(max(x, 1))))


def auto_image_size(model: str, family: Family, stats: DataStats, *, pretrained: bool, cpu: bool) -> int:
    """The median source side rounded up to a multiple of 32, within what the family and its weights want."""
    if family.fixed_size and (pretrained or family.size_kwarg is None):
        return native_size(model)
    floor = max(
        family.pretrained_min_size if pretrained else family.scratch_min_size,
        minimum_size(model, pretrained=pretrained),
    )
    ceiling = min(native_size(model), 224 if cpu else 320)
    side = stats.median_side or native_size(model)
    size = max(32, math.ceil(side / 32) * 32)
    return max(floor, min(size, max(ceiling, floor)))


def auto_batch_size(image_size: int, stats: DataStats, *, cpu: bool, max_batch: int = 256) -> int:
    """About as many pixels per batch as 32 (CPU) or 64 (GPU) images of 224x224, so small images get large
    batches (tiny feature maps leave the vector units idle otherwise); at least 16 steps per epoch, since
    on a small dataset the number of steps, not the images per second, limits what a few epochs learn."""
    base = 32 if cpu else 64
    batch = _pow2_floor(base * (224 / image_size) ** 2)
    batch = min(batch, max_batch, _pow2_floor(stats.train_images / MIN_STEPS_PER_EPOCH))
    return max(batch, 16) if stats.train_images >= 16 else max(stats.train_images, 1)


def scaled_lr(base: float, batch: int, optimizer: Optimizer) -> float:
    """The family's rate (for REFERENCE_BATCH) at this batch: linear for SGD, square root for Adam(W)."""
    ratio = batch / REFERENCE_BATCH
    return base * (ratio if optimizer == "sgd" else math.sqrt(ratio))


def _check_size(model: str, family: Family, size: int, pretrained: bool) -> None:
    if family.fixed_size and size != native_size(model):
        if pretrained or family.size_kwarg is None:
            how = "with pretrained weights" if family.size_kwarg else "always"
            raise InvalidInputError(
                f"metadata.image_size must be {native_size(model)} for {model} ({how}); got {size}", step=STEP
            )
        patch = _vit_patch(model)
        if size % patch:
            raise InvalidInputError(
                f"metadata.image_size {size} must be a multiple of {model}'s patch size {patch}", step=STEP
            )
    low = minimum_size(model, pretrained=pretrained)
    if size < low:
        raise InvalidInputError(
            f"metadata.image_size {size} is too small for {model}, which needs at least {low} px", step=STEP
        )


def _vit_patch(model: str) -> int:
    return int(model.rsplit("_", 1)[-1])  # vit_b_16 → 16


def _auto_choices(
    config: TrainingConfig, family: Family, stats: DataStats, cpu: bool, world_size: int
) -> dict[str, Any]:
    """`auto`'s values for the options the contract fixes. Under torchrun every process trains `batch`
    images per step, so the rate follows the global batch (`batch` x processes)."""
    pretrained = config.pretrained or config.weights_url is not None
    model = config.preferred_model
    image_size = auto_image_size(model, family, stats, pretrained=pretrained, cpu=cpu)
    if family.size_kwarg and not pretrained:
        image_size = math.ceil(image_size / _vit_patch(model)) * _vit_patch(model)
    set_ = config.model_fields_set
    size = config.image_size if "image_size" in set_ else image_size
    batch = (
        config.batch_size
        if "batch_size" in set_
        else auto_batch_size(size, stats, cpu=cpu, max_batch=family.max_batch)
    )
    optimizer = config.optimizer if "optimizer" in set_ else family.optimizer
    epochs = config.epochs if "epochs" in set_ else AUTO_EPOCHS
    base_lr = family.lr_pretrained if pretrained else family.lr_scratch
    return {
        "image_size": image_size,
        "batch_size": batch,
        "optimizer": optimizer,
        "learning_rate": round(scaled_lr(base_lr, batch * world_size, optimizer), 8),
        "weight_decay": family.weight_decay if optimizer != "adam" else 0.0,
        "epochs": epochs,
        "early_stopping_patience": max(3, math.ceil(epochs / 5)),
    }


def _open_choices(epochs: int) -> dict[str, Any]:
    """Both recipes: the warm-up length the contract leaves open."""
    return {"lr_warmup_epochs": round(min(1.0, 0.1 * epochs), 4)}


def resolve(config: TrainingConfig, stats: DataStats, *, cpu: bool, world_size: int = 1) -> Resolved:
    """The options this run trains with: the project's, then the recipe's, then the defaults."""
    family = family_of(config.preferred_model)
    set_ = config.model_fields_set
    pretrained = config.pretrained or config.weights_url is not None
    candidates = _auto_choices(config, family, stats, cpu, world_size) if config.recipe == "auto" else {}
    epochs = config.epochs if "epochs" in set_ else candidates.get("epochs", config.epochs)
    candidates.update(_open_choices(epochs))
    chosen = {key: value for key, value in candidates.items() if key not in set_}
    resolved = config.model_copy(update=chosen)
    if "learning_rate" in chosen:
        # The batch the chosen rate was scaled for: every process's batch together (the global batch).
        chosen["learning_rate_batch"] = resolved.batch_size * world_size
    _check_size(resolved.preferred_model, family, resolved.image_size, pretrained)

    build_kwargs = dict(family.kwargs)
    shape_kwargs: dict[str, Any] = {}
    if family.size_kwarg and resolved.image_size != native_size(resolved.preferred_model) and not pretrained:
        shape_kwargs[family.size_kwarg] = resolved.image_size
    build_kwargs.update(shape_kwargs)

    grad_clip = config.grad_clip_norm if config.grad_clip_norm is not None else family.grad_clip_norm
    class_weighted = (
        config.class_weighted_loss
        if config.class_weighted_loss is not None
        else stats.imbalance >= IMBALANCE_RATIO
    )
    if config.grad_clip_norm is None:
        chosen["grad_clip_norm"] = grad_clip
    if config.class_weighted_loss is None:
        chosen["class_weighted_loss"] = class_weighted
    return Resolved(
        resolved,
        family,
        build_kwargs,
        shape_kwargs,
        grad_clip,
        class_weighted,
        chosen,
        tuple(sorted(set_ - {"preferred_model"})),
    )
