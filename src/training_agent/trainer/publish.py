"""Name, upload and verify the weights (Requirement 6) without ever touching another project's model."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from uuid import UUID

from training_agent.core.errors import StorageError
from training_agent.core.storage import ObjectStorage, PreconditionFailedError
from training_agent.trainer.owner import RunOwner

logger = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_blob_name(project_name: str, project_id: UUID) -> str:
    """The project name as a single safe path segment: spaces, slashes and the like become '_'."""
    cleaned = _UNSAFE.sub("_", project_name).strip("._-")[:200]
    return cleaned or str(project_id)


def model_key(project_name: str, project_id: UUID) -> str:
    """`models/{project_name}_model.pth`, the path the evaluation agent expects (Requirement 6.1)."""
    return f"models/{safe_blob_name(project_name, project_id)}_model.pth"


def own_model_key(project_name: str, project_id: UUID) -> str:
    """The collision-free name used when `models/{project_name}_model.pth` holds another project's model:
    the project id makes it unique."""
    return f"models/{safe_blob_name(project_name, project_id)}_{project_id}_model.pth"


def choose_model_key(storage: ObjectStorage, project_name: str, project_id: UUID) -> tuple[str, int]:
    """Where this project's model goes, and the precondition to write it with.

    `models/{project_name}_model.pth` when that object is free (create only: precondition 0) or already
    this project's (replace exactly the generation seen); otherwise — another project of the same (or the
    same safe) name wrote it, or an object of unknown owner is there — `own_model_key`, which no other
    project can hold."""
    for key in (model_key(project_name, project_id), own_model_key(project_name, project_id)):
        precondition = write_precondition(storage, storage.model_url(key), project_id)
        if precondition is not None:
            return key, precondition
    raise StorageError(
        f"{own_model_key(project_name, project_id)} is held by another owner; remove it from the bucket"
    )


def write_precondition(storage: ObjectStorage, url: str, project_id: UUID) -> int | None:
    """0 (create) when `url` is free, its generation when it is this project's, None when it is not."""
    info = storage.stat(url)
    if info is None:
        return 0
    return info.generation if info.owner_project == str(project_id) else None


def upload_verified(
    owner: RunOwner,
    src: Path,
    url: str,
    *,
    if_generation_match: int | None,
    attempts: int,
    retry_delay_s: float = 2.0,
) -> int:
    """Upload `src` to `url` through the run's owner and check that the object is there and this run's;
    retry on failure (Requirements 6.3-6.4). Returns the number of attempts it took.

    A refused precondition is final (somebody else wrote the name meanwhile) unless what is there is this
    run's own upload, which an attempt that failed after its write left."""
    storage = owner.storage
    for attempt in range(1, attempts + 1):
        try:
            try:
                owner.put(src, url, if_generation_match=if_generation_match)
            except PreconditionFailedError:
                info = storage.stat(url)
                if not owner.owns(info) or info is None or info.size != src.stat().st_size:
                    raise
                owner.adopt(url, info)
            if not owner.owns(storage.stat(url)):
                raise StorageError(f"{url} is missing (or not this run's) right after its upload")
            return attempt
        except PreconditionFailedError:
            raise
        except StorageError as exc:
            if attempt == attempts:
                raise StorageError(f"Upload of the model to {url} failed {attempts} times: {exc}") from exc
            logger.warning("Upload attempt %d/%d to %s failed (%s); retrying", attempt, attempts, url, exc)
            time.sleep(retry_delay_s * attempt)
    raise AssertionError("unreachable")


def sidecar_key(model_key: str) -> str:
    """`models/{name}_model.json` beside `models/{name}_model.pth`."""
    return model_key.removesuffix(".pth") + ".json"


def picture_key(model_key: str, kind: str) -> str:
    """`models/{name}_{kind}.png` beside `models/{name}_model.pth` (kind: curves, confusion)."""
    return model_key.removesuffix(".pth").removesuffix("_model") + f"_{kind}.png"
