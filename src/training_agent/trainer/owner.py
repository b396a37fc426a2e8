"""The one owner of a run's side effects: its temporary folder, the objects it writes, its lease.

Every stage that creates something asks the owner to, and the owner remembers how to undo it: the folder is
removed when the run ends, and an object is deleted again on failure — only the generation this run wrote,
never a path computed afresh that might by then hold somebody else's object. What must stay (the model and
its sidecar once a `models` row points at them) is `keep`-ed. A reader sees here everything a run can leave.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from training_agent.core.errors import StorageError
from training_agent.core.settings import Settings
from training_agent.core.storage import ObjectInfo, ObjectStorage, owner_metadata
from training_agent.core.sweep import work_dir_prefix

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Written:
    url: str
    generation: int


class RunOwner:
    def __init__(self, settings: Settings, storage: ObjectStorage, project_id: UUID, run_id: str) -> None:
        self.settings = settings
        self.storage = storage
        self.project_id = project_id
        self.run_id = run_id
        self.metadata = owner_metadata(project_id, run_id)
        self._stack = contextlib.ExitStack()
        self._written: dict[str, Written] = {}  # url -> the generation this run wrote there last
        self._work_dir: Path | None = None

    # -- the temporary folder ------------------------------------------------------------------------------
    @property
    def work_dir(self) -> Path:
        """The run's private folder, named after the run so a sweep can tell whose it is."""
        if self._work_dir is None:
            self.settings.work_dir.mkdir(parents=True, exist_ok=True)
            path = Path(
                tempfile.mkdtemp(
                    dir=self.settings.work_dir, prefix=work_dir_prefix(self.project_id, self.run_id)
                )
            )
            self._stack.callback(shutil.rmtree, path, ignore_errors=True)
            self._work_dir = path
        return self._work_dir

    # -- objects -----------------------------------------------------------------------------------------
    def put(self, src: Path, url: str, *, if_generation_match: int | None = None) -> ObjectInfo:
        """Upload `src` as `url`, marked as this run's, on the precondition given (0: create only). When
        this run already wrote `url`, the precondition is the generation it wrote: nobody else's object
        is ever replaced."""
        previous = self._written.get(url)
        expected = previous.generation if previous is not None else if_generation_match
        info = self.storage.upload(src, url, metadata=self.metadata, if_generation_match=expected)
        self._written[url] = Written(url, info.generation)
        return info

    def adopt(self, url: str, info: ObjectInfo) -> None:
        """An object this run wrote that an earlier attempt of the same run created (its checkpoint)."""
        self._written[url] = Written(url, info.generation)

    def owns(self, info: ObjectInfo | None) -> bool:
        return info is not None and info.owner_run == self.run_id

    def keep(self, *urls: str) -> None:
        """These objects outlive the run (a `models` row points at them): never delete them."""
        for url in urls:
            self._written.pop(url, None)

    def discard(self, url: str) -> None:
        """Delete what this run wrote at `url` (its generation only); best effort."""
        written = self._written.pop(url, None)
        if written is None:
            return
        try:
            self.storage.delete(url, if_generation_match=written.generation)
        except StorageError as exc:  # changed meanwhile (not ours any more) or unreachable: leave it
            logger.warning("Did not remove %s: %s", url, exc)

    def discard_all(self, *, except_prefix: str | None = None) -> None:
        """Roll back every object this run wrote and did not keep (the checkpoint too, unless its URL
        starts with `except_prefix`: a retry of the run resumes from it)."""
        for url in list(self._written):
            if except_prefix is None or not url.startswith(except_prefix):
                self.discard(url)

    @property
    def written(self) -> list[str]:
        return sorted(self._written)

    # -- the end -----------------------------------------------------------------------------------------
    def close(self) -> None:
        """Remove the temporary folder (and anything else registered on the stack)."""
        self._stack.close()
