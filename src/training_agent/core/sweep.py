"""Remove what runs that ended left behind: their temporary folders and their checkpoint objects.

Everything a run writes outside the models is named after its run id: the work folder
`{work_dir}/run-{project id}-{run id}-*` and the checkpoint `checkpoints/tr-{project id}/{run id}/...`. So a
sweep removes exactly a dead run's own leftovers and never another run's (a live run's id is still the one in
its project's run record, and its project is still `training`).
"""

from __future__ import annotations

import logging
import re
import shutil
import socket
from pathlib import Path
from uuid import UUID

from training_agent.core.lease import run_id_of, run_of
from training_agent.core.processes import pid_runs_project
from training_agent.core.records import Project, ProjectStatus, RecordsStore
from training_agent.core.runs import run_name
from training_agent.core.settings import Settings
from training_agent.core.storage import ObjectStorage

logger = logging.getLogger(__name__)

CHECKPOINTS_PREFIX = "checkpoints"
_WORK_DIR_RE = re.compile(r"^run-(?P<project>[0-9a-f-]{36})-(?P<run>[0-9a-f]{32})-")
_CHECKPOINT_RE = re.compile(r"/tr-(?P<project>[0-9a-f-]{36})/(?P<run>[0-9a-f]{32})/")


def work_dir_prefix(project_id: UUID, run_id: str) -> str:
    """The prefix of the run's temporary folder under the work dir."""
    return f"run-{project_id}-{run_id}-"


def checkpoint_prefix(project_id: UUID, run_id: str) -> str:
    """The key prefix of the run's checkpoint objects."""
    return f"{CHECKPOINTS_PREFIX}/{run_name(project_id)}/{run_id}/"


def remove_run_leftovers(settings: Settings, storage: ObjectStorage, project_id: UUID, run_id: str) -> int:
    """Remove the temporary folders and checkpoint objects of one run that ended; returns how many things
    were removed. Best effort: a failure is logged, never raised (a later sweep tries again)."""
    removed = 0
    root = settings.work_dir
    if root.is_dir():
        for folder in root.glob(work_dir_prefix(project_id, run_id) + "*"):
            removed += _remove_tree(folder)
    prefix = storage.model_url(checkpoint_prefix(project_id, run_id))
    try:
        for url in storage.list(prefix):
            storage.delete(url)
            removed += 1
    except Exception:
        logger.warning("Could not remove the checkpoints under %s", prefix, exc_info=True)
    return removed


def _remove_tree(folder: Path) -> int:
    try:
        shutil.rmtree(folder)
    except OSError:
        logger.warning("Could not remove the work folder %s", folder, exc_info=True)
        return 0
    return 1


def _live(records: RecordsStore, project_id: UUID, run_id: str, cache: dict[UUID, str | None]) -> bool:
    """Whether (project, run) is the project's current run and still `training` — or its trainer still
    lives on this host (a cancelled run's trainer stops by itself at its next step, and cleans up then:
    its files must not vanish under it)."""
    if project_id not in cache:
        project = records.get_project(project_id)
        cache[project_id] = run_id_of(project) if project is not None and _running(project) else None
    return cache[project_id] == run_id


def _running(project: Project) -> bool:
    if project.status == ProjectStatus.TRAINING.value:
        return True
    run = run_of(project)
    pid = run.get("pid")
    return (
        isinstance(pid, int) and run.get("host") == socket.gethostname() and pid_runs_project(pid, project.id)
    )


def sweep_ended(settings: Settings, records: RecordsStore, storage: ObjectStorage) -> int:
    """At start-up (and after reaping): remove the leftovers of every run that is not live any more.
    Returns how many things were removed."""
    cache: dict[UUID, str | None] = {}
    dead: set[tuple[UUID, str]] = set()
    if settings.work_dir.is_dir():
        for folder in settings.work_dir.iterdir():
            match = _WORK_DIR_RE.match(folder.name)
            if match:
                dead.add((UUID(match["project"]), match["run"]))
    try:
        urls = storage.list(storage.model_url(CHECKPOINTS_PREFIX + "/"))
    except Exception:
        logger.warning("Could not list the checkpoints to sweep", exc_info=True)
        urls = []
    for url in urls:
        match = _CHECKPOINT_RE.search(url)
        if match:
            dead.add((UUID(match["project"]), match["run"]))
    removed = 0
    for project_id, run_id in sorted(dead):
        if not _live(records, project_id, run_id, cache):
            removed += remove_run_leftovers(settings, storage, project_id, run_id)
    if removed:
        logger.info("Swept %d leftovers of runs that ended", removed)
    return removed
