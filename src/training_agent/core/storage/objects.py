"""What the storage backends say about an object, and the refusal of a conditional write."""

from __future__ import annotations

from dataclasses import dataclass, field

from training_agent.core.errors import StorageError

# Metadata keys every object a run writes carries, so that nobody else's run can mistake it for its own.
OWNER_PROJECT = "training-agent-project-id"
OWNER_RUN = "training-agent-run-id"


@dataclass(frozen=True)
class ObjectInfo:
    """An object's generation (GCS's, or the file's mtime in ns locally), size and custom metadata."""

    generation: int
    size: int
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def owner_project(self) -> str | None:
        return self.metadata.get(OWNER_PROJECT)

    @property
    def owner_run(self) -> str | None:
        return self.metadata.get(OWNER_RUN)


def owner_metadata(project_id: object, run_id: str | None) -> dict[str, str]:
    meta = {OWNER_PROJECT: str(project_id)}
    if run_id:
        meta[OWNER_RUN] = run_id
    return meta


class PreconditionFailedError(StorageError):
    """A conditional write or delete was refused: the object is not (any more) the generation expected."""
