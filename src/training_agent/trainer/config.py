"""Training options read from the project's metadata (Requirements 4.1, 4.5, 5.1-5.3)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from training_agent.core.errors import InvalidInputError

Recipe = Literal["seed", "auto"]
Optimizer = Literal["adam", "adamw", "sgd"]
AugmentPolicy = Literal["none", "randaugment", "trivialaugment"]


class TrainingConfig(BaseModel):
    """The metadata keys the trainer understands; other agents' keys are ignored.

    The defaults are the seed contract (Requirements 4.5, 5.1-5.3: Adam at 0.001, batch 32, 224x224, the
    metadata's epochs) plus our choices where the contract is silent. With `recipe: auto`, the keys the
    project did not set are chosen per model family and dataset (`trainer/recipes.py`); a key the project
    set always wins. `model_fields_set` tells the two apart, so read it before filling in defaults.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    preferred_model: str = Field(default="resnet18", min_length=1)
    # "seed": the contract's optimiser, learning rate, batch and image size; "auto": the trainer picks them.
    recipe: Recipe = "seed"
    epochs: int = Field(default=10, gt=0, le=10_000)
    learning_rate: float = Field(default=0.001, gt=0, le=10)
    batch_size: int = Field(default=32, gt=0, le=65_536)
    image_size: int = Field(default=224, ge=8, le=4096)
    optimizer: Optimizer = "adam"
    # Decoupled weight decay (adamw) or L2 (sgd); never applied to norm layers, biases or embeddings.
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    pretrained: bool = True
    # A state_dict for the architecture (gs:// or local), used instead of downloading pretrained weights.
    weights_url: str | None = None
    # Repeatable runs: the same seed gives the same shuffling, augmentation and initial head weights.
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    # Train-time augmentation (never on val/test). The defaults cannot change a class: a mild crop, a small
    # shift and light colour jitter. Flips and strong crops are opt-in (digits, text, signs: not allowed).
    augment: bool = True
    augment_min_scale: float = Field(default=0.8, gt=0, le=1)
    augment_translate: float = Field(default=0.1, ge=0, le=0.5)
    augment_color_jitter: float = Field(default=0.1, ge=0, le=1)
    augment_hflip: bool = False
    augment_vflip: bool = False
    augment_policy: AugmentPolicy = "none"
    mixup_alpha: float = Field(default=0.0, ge=0, le=10)
    cutmix_alpha: float = Field(default=0.0, ge=0, le=10)
    # Stop when val accuracy has not improved for this many epochs (None: train every epoch; `auto` sets it).
    early_stopping_patience: int | None = Field(default=None, gt=0)
    lr_schedule: Literal["none", "cosine", "step"] = "cosine"
    # A linear warm-up before the schedule, in epochs (may be fractional); unset: a tenth of the run, at
    # most one epoch.
    lr_warmup_epochs: float | None = Field(default=None, ge=0, le=1000)
    lr_step_size: int | None = Field(default=None, gt=0)  # step schedule: epochs per decay (default epochs/3)
    lr_gamma: float = Field(default=0.1, gt=0, le=1)  # step schedule: the decay factor
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    # Clip the gradients' global norm; unset: the model family's value.
    grad_clip_norm: float | None = Field(default=None, gt=0)
    # Weight each class's loss by the inverse of its share of the training split. Unset: on when the
    # largest class has at least 3x the images of the smallest.
    class_weighted_loss: bool | None = None
    # A short learning-rate range test before training picks the learning rate (logged and recorded).
    lr_find: bool = False
    # A dataset without val/: carve this share of each class's training images out as the validation split
    # (stratified, seeded). Unset, a missing val/ is refused.
    val_fraction: float | None = Field(default=None, gt=0, lt=0.5)

    @model_validator(mode="after")
    def _step_size_needs_step_schedule(self) -> TrainingConfig:
        if self.lr_step_size is not None and self.lr_schedule != "step":
            raise ValueError("lr_step_size only applies with lr_schedule 'step'")
        return self

    @property
    def resolved_lr_step_size(self) -> int:
        return self.lr_step_size or max(1, self.epochs // 3)

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any] | None) -> TrainingConfig:
        """Validate the project's metadata; errors name each bad key and what it must be."""
        known = {k: v for k, v in (metadata or {}).items() if k in cls.model_fields and v is not None}
        try:
            return cls.model_validate(known)
        except ValidationError as exc:
            problems = []
            for item in exc.errors():
                key = ".".join(str(p) for p in item["loc"])
                message = item["msg"].removeprefix("Value error, ")
                if key:
                    problems.append(f"metadata.{key} {message.lower()} (got {item.get('input')!r})")
                else:
                    problems.append(f"metadata: {message}")
            raise InvalidInputError(
                "Invalid training options in the project's metadata: " + "; ".join(problems),
                step="validate_config",
            ) from exc
