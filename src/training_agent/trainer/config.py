"""Training options read from the project's metadata (Requirements 4.1, 4.5, 5.1-5.3)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from training_agent.core.errors import InvalidInputError


class TrainingConfig(BaseModel):
    """The metadata keys the trainer understands; other agents' keys are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    preferred_model: str = Field(default="resnet18", min_length=1)
    epochs: int = Field(default=10, gt=0, le=10_000)
    learning_rate: float = Field(default=0.001, gt=0, le=10)
    batch_size: int = Field(default=32, gt=0, le=65_536)
    image_size: int = Field(default=224, ge=8, le=4096)
    pretrained: bool = True
    # A state_dict for the architecture (gs:// or local), used instead of downloading pretrained weights.
    weights_url: str | None = None
    # Repeatable runs: the same seed gives the same shuffling, augmentation and initial head weights.
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    # Random resized crop + horizontal flip on the training split only (never on val/test).
    augment: bool = True
    augment_min_scale: float = Field(default=0.35, gt=0, le=1)
    # Stop when val accuracy has not improved for this many epochs (None: train every epoch).
    early_stopping_patience: int | None = Field(default=None, gt=0)
    lr_schedule: Literal["none", "cosine", "step"] = "none"
    lr_step_size: int | None = Field(default=None, gt=0)  # step schedule: epochs per decay (default epochs/3)
    lr_gamma: float = Field(default=0.1, gt=0, le=1)  # step schedule: the decay factor
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    # Weight each class's loss by the inverse of its share of the training split (imbalanced data).
    class_weighted_loss: bool = False
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
