"""The pre-flight: the layout half of the data gate, run by the start route before a run is accepted.

On Kubernetes a bad dataset must not hold a GPU node while a trainer discovers it is bad. So before the
project is claimed, the API reads the dataset zip's member listing from its central directory — a stat and
one to three ranged reads of the object's end, never the images (core/datasets/listing.py) — and runs the
layout rules the trainer runs (core/datasets/layout.py) on it: splits, classes, counts, extensions, sizes and
the compression ratio. A dataset they refuse fails the project there, so no trainer process, TrainingRun or
Job is ever created for it. The trainer still unpacks and decodes every image (the decode half).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from training_agent.api.errors import BadRequest, Unavailable
from training_agent.core.datasets import rules
from training_agent.core.datasets.layout import DatasetPlan, plan_layout
from training_agent.core.datasets.listing import list_zip_members
from training_agent.core.datasets.members import Member
from training_agent.core.errors import (
    EXIT_INVALID_INPUT,
    InvalidInputError,
    ObjectNotFoundError,
    StorageError,
)
from training_agent.core.logs import AgentLog
from training_agent.core.records import ProjectStatus, RecordsStore
from training_agent.core.records.models import Project, utcnow
from training_agent.core.settings import Settings
from training_agent.core.storage import ObjectStorage

STEP = "preflight"
ERROR_TYPE = "InvalidDataset"


@dataclass(frozen=True)
class Passed:
    """What the start logs to `agent_logs` once the project is claimed."""

    message: str
    details: dict[str, Any]


@dataclass(frozen=True)
class Layout:
    """The dataset zip's listing and what the layout rules made of it. `plan` is None when the zip holds
    only another zip (`nested_zip`), whose layout only the trainer sees once it unwraps it."""

    members: list[Member]
    plan: DatasetPlan | None
    nested_zip: str | None = None


class Refused(Exception):
    """The layout rules refuse the dataset, or its object does not exist: no retry can help."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def read_layout(project: Project, dataset_url: str, *, storage: ObjectStorage, settings: Settings) -> Layout:
    """Read the zip's listing and run the layout rules on it, touching no record. Raises Refused with the
    reason, or StorageError when storage cannot be read now."""
    try:
        members = list_zip_members(storage, dataset_url)
        nested = rules.only_zip(members)
        if nested is not None:
            # Its layout is inside the inner zip, which only a download shows: the trainer's gate checks
            # it once it unwraps it. The outer listing's limits still apply.
            rules.check_listing(
                members,
                max_files=settings.max_dataset_files,
                max_bytes=settings.max_dataset_bytes,
                max_ratio=settings.max_compression_ratio,
            )
            return Layout(members, None, nested)
        plan = plan_layout(
            members,
            max_files=settings.max_dataset_files,
            max_bytes=settings.max_dataset_bytes,
            max_ratio=settings.max_compression_ratio,
            allow_missing_val=_carves_val(project),
        )
    except ObjectNotFoundError as exc:  # the record points at nothing: no retry can help
        raise Refused(
            f"The dataset object {dataset_url} does not exist; upload it or fix the dataset's gcs_url"
        ) from exc
    except InvalidInputError as exc:
        raise Refused(str(exc)) from exc
    return Layout(members, plan)


def check_dataset(
    project: Project, dataset_url: str, *, records: RecordsStore, storage: ObjectStorage, settings: Settings
) -> Passed | None:
    """Check the dataset's layout from its listing. A dataset the rules refuse (or an object that does not
    exist) fails the project and raises BadRequest with the reason; storage that cannot be read now raises
    Unavailable and leaves the project as it was. None when TRAINING_AGENT_PREFLIGHT is off."""
    if not settings.preflight:
        return None
    started = time.perf_counter()
    try:
        layout = read_layout(project, dataset_url, storage=storage, settings=settings)
    except Refused as exc:
        raise _refuse(records, project, exc.message, settings.agent_name) from exc
    except StorageError as exc:
        raise Unavailable(f"The dataset could not be read to check it, try again: {exc}") from exc
    if layout.plan is None:
        return Passed(
            f"Dataset pre-flight: the zip holds only {layout.nested_zip}; its layout is checked when the "
            "trainer unwraps it",
            {"nested_zip": layout.nested_zip},
        )
    return _passed(layout.plan, layout.members, time.perf_counter() - started)


def _carves_val(project: Project) -> bool:
    """The training option `val_fraction` makes the trainer carve val/ out of train/ when it is missing."""
    fraction = project.metadata.get("val_fraction")
    return isinstance(fraction, int | float) and not isinstance(fraction, bool) and fraction > 0


def _refuse(records: RecordsStore, project: Project, message: str, agent_name: str) -> BadRequest:
    """Fail the project (`pending_training` → `failed`, compare-and-set) and say why in the answer."""
    error = {
        "message": message,
        "type": ERROR_TYPE,
        "step": STEP,
        "exit_code": EXIT_INVALID_INPUT,  # what the trainer would have exited with on the same dataset
        "traceback": None,
        "failed_at": utcnow().isoformat(),
    }
    moved = records.transition_project(
        project.id,
        from_status=ProjectStatus.PENDING_TRAINING.value,
        to_status=ProjectStatus.FAILED.value,
        metadata_patch={"error": error},
    )
    if moved is not None:  # a concurrent start of the same bad dataset may have failed it first
        AgentLog(records, project.id, agent_name).error(message, **error)
    return BadRequest(message)


def _passed(plan: DatasetPlan, members: list[Member], seconds: float) -> Passed:
    images = plan.summary()["images"]
    counts = ", ".join(f"{images[split]:,} {split}" for split in ("train", "val", "test") if split in images)
    uncompressed = sum(m.size for m in members)
    milliseconds = round(seconds * 1000)
    message = (
        f"Dataset pre-flight passed: {len(plan.classes)} classes, {counts} images, "
        f"{uncompressed / 1e6:,.1f} MB uncompressed, in {milliseconds} ms"
    )
    details = {
        **plan.summary(),
        "step": STEP,
        "members": len(members),
        "uncompressed_bytes": uncompressed,
        "compressed_bytes": sum(m.compressed_size for m in members),
        "duration_ms": milliseconds,
    }
    return Passed(message, details)
