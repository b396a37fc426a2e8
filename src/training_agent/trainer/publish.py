"""Upload the weights and verify them (Requirement 6)."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from uuid import UUID

from training_agent.core.errors import StorageError
from training_agent.core.storage import ObjectStorage

logger = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_blob_name(project_name: str, project_id: UUID) -> str:
    """The project name as a single safe path segment: spaces, slashes and the like become '_'."""
    cleaned = _UNSAFE.sub("_", project_name).strip("._-")[:200]
    return cleaned or str(project_id)


def model_key(project_name: str, project_id: UUID) -> str:
    """`models/{project_name}_model.pth`, the path the evaluation agent expects (Requirement 6.1)."""
    return f"models/{safe_blob_name(project_name, project_id)}_model.pth"


def upload_verified(
    storage: ObjectStorage, src: Path, url: str, *, attempts: int, retry_delay_s: float = 2.0
) -> int:
    """Upload `src` to `url` and check that the object exists; retry on failure (Requirements 6.3-6.4).
    Returns the number of attempts it took."""
    for attempt in range(1, attempts + 1):
        try:
            storage.upload(src, url)
            if not storage.exists(url):
                raise StorageError(f"{url} is missing right after its upload")
            return attempt
        except StorageError as exc:
            if attempt == attempts:
                raise StorageError(f"Upload of the model to {url} failed {attempts} times: {exc}") from exc
            logger.warning("Upload attempt %d/%d to %s failed (%s); retrying", attempt, attempts, url, exc)
            time.sleep(retry_delay_s * attempt)
    raise AssertionError("unreachable")


def sidecar_key(model_key: str) -> str:
    """`models/{name}_model.json` beside `models/{name}_model.pth`."""
    return model_key.removesuffix(".pth") + ".json"
