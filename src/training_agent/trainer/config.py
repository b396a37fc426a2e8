"""Training options read from the project's metadata (Requirements 4.1, 4.5, 5.1-5.3)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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
    seed: int | None = None

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
                problems.append(f"metadata.{key} {item['msg'].lower()} (got {item.get('input')!r})")
            raise InvalidInputError(
                "Invalid training options in the project's metadata: " + "; ".join(problems),
                step="validate_config",
            ) from exc
