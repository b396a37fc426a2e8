"""Create a project the way the other agents do: its dataset in the bucket, a `projects` row in
`pending_training` and its `datasets` row — all of it, or nothing.

Used by `training-agent projects create` (which checks its input first with `check_dataset` and
`check_training_options`) and by the demo (which makes its own zip).
"""

from __future__ import annotations

import difflib
import logging
import re
import zipfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from uuid import UUID

from training_agent.core.errors import InvalidInputError, RecordsError
from training_agent.core.records import Dataset, Project, ProjectStatus, RecordsStore
from training_agent.core.storage import ObjectStorage, is_gcs_url, owner_metadata, parse_gcs_url

logger = logging.getLogger("training_agent.projects")

# The status a project holds while its dataset is uploaded and its dataset row written. The orchestrator
# acts on `pending_training` only, so it never sees a project whose dataset row does not exist yet; the
# project moves on by a compare-and-set once both are there, and is deleted again if anything fails.
CREATING = "creating"
# Names people type for a training option that are not its key (the demo's flags, mostly).
_KEY_ALIASES = {"model": "preferred_model", "lr": "learning_rate"}
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def dataset_key(project_id: UUID, filename: str) -> str:
    """Where a project's uploaded dataset lives in the bucket: `datasets/{project id}/{file name}`, so that
    no two projects' uploads can share a name (the file name made safe for an object key)."""
    safe = _UNSAFE_KEY_CHARS.sub("_", filename).strip("._") or "dataset.zip"
    return f"datasets/{project_id}/{safe}"


def check_dataset(source: str, storage: ObjectStorage) -> str:
    """The dataset a new project will point at, checked before anything is created: a gs:// URL whose
    object exists (returned as given), or a local zip file (returned as its resolved path)."""
    if is_gcs_url(source):
        url = parse_gcs_url(source)
        if storage.stat(str(url)) is None:
            raise InvalidInputError(f"--dataset {source}: no such object in the bucket")
        return source
    path = Path(source).expanduser()
    if not path.exists():
        raise InvalidInputError(f"--dataset {source}: no such file")
    if not path.is_file():
        raise InvalidInputError(f"--dataset {source}: not a file; zip the dataset folder first")
    if not zipfile.is_zipfile(path):
        raise InvalidInputError(f"--dataset {source}: not a zip archive")
    return str(path.resolve())


def unknown_key_hint(key: str, known: list[str], help_hint: str) -> str:
    """Half a sentence for a key that is not a training option: the closest keys, else where to look."""
    spelled = key.replace("-", "_").lower()
    if spelled in known and spelled != key:
        return f"did you mean {spelled}?"
    close = [_KEY_ALIASES[spelled]] if spelled in _KEY_ALIASES else []
    close += [name for name in difflib.get_close_matches(spelled, known, n=3) if name not in close]
    if close:
        return f"did you mean {' or '.join(close)}?"
    return help_hint


def check_training_options(
    metadata: dict[str, Any], *, strict_keys: dict[str, Any] | None = None, help_hint: str
) -> None:
    """Refuse what the trainer would refuse, now rather than at training time: a key of `strict_keys` (the
    ones given one by one, as `--option`) that is not a training option — a typo the trainer would ignore —
    and a value the trainer's own validation refuses. Other metadata keys (another agent's) pass."""
    # pydantic only: no torch needed to check the options.
    from training_agent.trainer.config import TrainingConfig

    known = list(TrainingConfig.model_fields)
    for key in strict_keys or {}:
        if key not in TrainingConfig.model_fields:
            raise InvalidInputError(
                f"--option {key}: not a training option; {unknown_key_hint(key, known, help_hint)}"
            )
    config = TrainingConfig.from_metadata(metadata)
    if metadata.get("preferred_model") is not None:  # the default is known good: no torch import for it
        _check_model_if_installed(config.preferred_model)


def _check_model_if_installed(name: str) -> None:
    """The model name against torchvision's list, where the trainer extra is installed (the control-plane
    image has no torch; there the trainer's own check reports a wrong name)."""
    try:
        from training_agent.trainer.model import check_model_name
    except ImportError:
        return
    check_model_name(name)


def create_project(
    records: RecordsStore,
    storage: ObjectStorage,
    *,
    name: str,
    dataset: str,
    metadata: dict[str, Any],
) -> tuple[Project, Dataset]:
    """Insert the project and its dataset row, uploading a local zip `dataset` to the configured bucket
    first (a gs:// URL is recorded as given). The project is `pending_training` once everything is there;
    on any failure, Ctrl-C included, what this call created is removed again."""
    with ExitStack() as undo:
        project = records.create_project(name, status=CREATING, metadata=metadata)
        undo.callback(_quietly, f"delete project {project.id}", records.delete_project, project.id)
        if is_gcs_url(dataset):
            url, row_name = dataset, Path(parse_gcs_url(dataset).blob).name
        else:
            path = Path(dataset)
            url, row_name = storage.model_url(dataset_key(project.id, path.name)), path.name
            # Create-only: an object of that name can only be another creation's, never overwritten.
            written = storage.upload(
                path, url, metadata=owner_metadata(project.id, None), if_generation_match=0
            )
            undo.callback(
                _quietly, f"delete {url}", storage.delete, url, if_generation_match=written.generation
            )
        row = records.create_dataset(project.id, gcs_url=url, name=row_name)
        ready = records.transition_project(
            project.id, from_status=CREATING, to_status=ProjectStatus.PENDING_TRAINING.value
        )
        if ready is None:
            raise RecordsError(f"Project {project.id} changed while it was being created")
        undo.pop_all()
    return ready, row


def _quietly(what: str, action: Any, *args: Any, **kwargs: Any) -> None:
    """An undo step that must not hide the error being undone: a failure is logged, not raised."""
    try:
        action(*args, **kwargs)
    except Exception:
        logger.warning("Could not %s while undoing a failed project creation", what, exc_info=True)
