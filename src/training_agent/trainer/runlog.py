"""The trainer's own log of one run: a file in the run's folder, written from the run's start, uploaded to the
bucket so that it outlives the pod or child process that wrote it.

- A run that succeeds: beside its model (`models/{name}_model.log` next to `models/{name}_model.pth`), as
  `log_url` in the models row and the sidecar. It is an object of the run like the weights: written through
  the run's owner, rolled back with them on failure, kept once the `models` row points at it.
- A run that fails: under the project's failure prefix (`failures/tr-{project id}/{run id}-{attempt}.log`),
  as `log_url` in the project's `metadata.error`. It is the record of the failure, so it is never rolled back.

A log is a courtesy: failing to upload it is a warning, never the reason a run fails.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from uuid import UUID

from training_agent.core.errors import StorageError
from training_agent.core.logs import LogFormat, make_formatter
from training_agent.core.runs import run_name
from training_agent.core.storage import ObjectStorage
from training_agent.trainer.owner import RunOwner
from training_agent.trainer.publish import upload_verified, write_precondition

logger = logging.getLogger(__name__)

FAILURES_PREFIX = "failures"


def log_key(model_key: str) -> str:
    """`models/{name}_model.log` beside `models/{name}_model.pth`."""
    return model_key.removesuffix(".pth") + ".log"


def failure_log_key(project_id: UUID, run_id: str, attempt: int) -> str:
    """Where a failed attempt's log goes: the project's failure prefix, one object per run and attempt."""
    return f"{FAILURES_PREFIX}/{run_name(project_id)}/{run_id}-{attempt}.log"


class RunLog:
    """A handler on the root logger that copies every line of this process into the run's folder."""

    def __init__(self, path: Path, log_format: LogFormat) -> None:
        self.path = path
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setFormatter(make_formatter(log_format))
        logging.getLogger().addHandler(self.handler)
        self.url: str | None = None  # where it was uploaded beside the model
        self._generation = 0

    def _snapshot(self) -> Path:
        """A still copy of the log to upload: the live file grows while it is uploaded (uploads log too)."""
        self.handler.flush()
        copy = self.path.with_name(self.path.name + ".upload")
        shutil.copyfile(self.path, copy)
        return copy

    def publish(self, owner: RunOwner, url: str, *, attempts: int, retry_delay_s: float) -> str | None:
        """Upload the log so far beside the model, as an object of the run (rolled back with the model on
        failure); returns its URL, or None when it could not be uploaded."""
        storage = owner.storage
        try:
            upload_verified(
                owner,
                self._snapshot(),
                url,
                if_generation_match=write_precondition(storage, url, owner.project_id) or 0,
                attempts=attempts,
                retry_delay_s=retry_delay_s,
            )
            info = storage.stat(url)
        except (StorageError, OSError) as exc:
            logger.warning("Could not upload the run's log to %s: %s", url, exc)
            return None
        self.url, self._generation = url, info.generation if info is not None else 0
        return url

    def complete(self, owner: RunOwner) -> None:
        """After the run is recorded: replace the published copy with the whole log (only the generation
        this run wrote), so the lines of the last stages are in it too."""
        if self.url is None:
            return
        try:
            owner.put(self._snapshot(), self.url, if_generation_match=self._generation)
        except (StorageError, OSError) as exc:
            logger.warning("Could not upload the end of the run's log to %s: %s", self.url, exc)
        finally:
            owner.keep(self.url)  # the models row points at it: whatever happens, it stays

    def publish_failure(self, owner: RunOwner, url: str) -> str | None:
        """Upload the whole log of a failed run (create only, never rolled back); returns its URL, or None
        when it could not be uploaded."""
        try:
            owner.storage.upload(self._snapshot(), url, metadata=owner.metadata, if_generation_match=0)
        except (StorageError, OSError) as exc:
            logger.warning("Could not upload the failed run's log to %s: %s", url, exc)
            return None
        return url

    def close(self) -> None:
        logging.getLogger().removeHandler(self.handler)
        self.handler.close()


def failure_log_url(storage: ObjectStorage, project_id: UUID, run_id: str, attempt: int) -> str:
    return storage.model_url(failure_log_key(project_id, run_id, attempt))
