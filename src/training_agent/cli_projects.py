"""`training-agent projects create | list | show | logs`: the shared tables as people use them, on whichever
records store and bucket the settings select (embedded SQLite and a local folder by default, or Supabase
and GCS)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from training_agent.cli import _key_value, _positive_int
from training_agent.core.errors import ConfigurationError, InvalidInputError
from training_agent.core.records import AgentLog, LogLevel, Project, ProjectStatus, RecordsStore, open_records
from training_agent.core.settings import Settings

# `logs --follow` stops once the project is in none of these: the states in which its run may still log.
RUNNING_STATES = frozenset({"creating", ProjectStatus.PENDING_TRAINING.value, ProjectStatus.TRAINING.value})
_POLL_S = 1.0
# The trainer writes its last rows just after it moves the project on: keep reading this long after that.
_SETTLE_S = 3.0
# Rows read per poll: far more than a run writes in one poll's time (about one row per epoch and step).
_WINDOW = 500
_LEVELS = [level.value for level in LogLevel]
_HELP_HINT = "`training-agent demo --help` lists the training options"


def add_projects_parser(commands: argparse._SubParsersAction[Any]) -> None:
    projects = commands.add_parser(
        "projects", help="create, list and show projects and follow their logs (the records store's tables)"
    )
    actions = projects.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = actions.add_parser(
        "create",
        help="create a project in pending_training with its dataset (a local zip is uploaded to the bucket)",
    )
    create.add_argument("--name", required=True, help="the project's name (the model is named after it)")
    create.add_argument(
        "--dataset",
        required=True,
        metavar="PATH|gs://...",
        help="a dataset zip: a local file (uploaded to datasets/<project id>/ in the bucket) or a gs:// URL "
        "of an existing object (recorded as is)",
    )
    options = create.add_mutually_exclusive_group()
    options.add_argument(
        "--metadata", metavar="JSON", help="the project's metadata as a JSON object, e.g. '{\"epochs\": 5}'"
    )
    options.add_argument(
        "--option",
        dest="options",
        action="append",
        type=_key_value,
        metavar="KEY=VALUE",
        help="set one training option (repeatable): VALUE is read as JSON when it is JSON, else as a string",
    )
    create.add_argument("--json", action="store_true", help="print the new project as one JSON object")

    listing = actions.add_parser("list", help="list projects, most recently updated first")
    listing.add_argument("--status", help="only projects in this status, e.g. training")
    listing.add_argument(
        "--limit", type=_positive_int, default=50, metavar="N", help="at most N (default 50)"
    )
    listing.add_argument("--json", action="store_true", help="print one JSON object")

    show = actions.add_parser("show", help="a project, its dataset, its model and its last logs")
    show.add_argument("project_id", type=UUID, metavar="ID")
    show.add_argument("--json", action="store_true", help="print one JSON object")

    logs = actions.add_parser("logs", help="a project's agent_logs rows, oldest first")
    logs.add_argument("project_id", type=UUID, metavar="ID")
    logs.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="keep printing new rows until the project leaves creating/pending_training/training (or Ctrl-C)",
    )
    logs.add_argument("--level", choices=_LEVELS, help="only rows of this level and above")
    logs.add_argument(
        "--tail", type=_positive_int, default=50, metavar="N", help="start with the last N rows (default 50)"
    )


def cmd_projects(args: argparse.Namespace, settings: Settings) -> int:
    actions: dict[str, Callable[[argparse.Namespace, Settings, RecordsStore], int]] = {
        "create": _create,
        "list": _list,
        "show": _show,
        "logs": _logs,
    }
    records = open_records(settings)
    try:
        return actions[args.action](args, settings, records)
    except InvalidInputError as exc:
        # A wrong dataset or option given on this command line: a usage error here (exit 2), not a
        # project that cannot be trained (3), since nothing was created.
        raise ConfigurationError(str(exc)) from exc
    finally:
        records.close()


def _metadata(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The project's metadata, and the keys given one by one (`--option`, checked against the options)."""
    if args.metadata is None:
        options = dict(args.options or [])
        return {k: v for k, v in options.items() if v is not None}, options
    try:
        metadata = json.loads(args.metadata)
    except ValueError as exc:
        raise ConfigurationError(f"--metadata is not valid JSON: {exc}") from exc
    if not isinstance(metadata, dict):
        raise ConfigurationError(f"--metadata must be a JSON object, got {type(metadata).__name__}")
    return metadata, {}


def _create(args: argparse.Namespace, settings: Settings, records: RecordsStore) -> int:
    from training_agent.core.storage import ObjectStorage
    from training_agent.projects import check_dataset, check_training_options, create_project

    if not args.name.strip():
        raise ConfigurationError("--name is empty; give the project a name")
    metadata, strict = _metadata(args)
    check_training_options(metadata, strict_keys=strict, help_hint=_HELP_HINT)
    storage = ObjectStorage(settings)
    dataset = check_dataset(args.dataset, storage)
    project, row = create_project(records, storage, name=args.name, dataset=dataset, metadata=metadata)
    if args.json:
        print(
            json.dumps(
                {
                    "project_id": str(project.id),
                    "name": project.name,
                    "status": project.status,
                    "dataset_url": row.gcs_url,
                    "metadata": project.metadata,
                }
            )
        )
    else:
        print(project.id)
    return 0


def _list(args: argparse.Namespace, settings: Settings, records: RecordsStore) -> int:
    statuses = [args.status] if args.status else None
    projects = records.list_projects(statuses=statuses, limit=args.limit)
    if args.json:
        print(json.dumps({"projects": [p.model_dump(mode="json") for p in projects]}))
        return 0
    print(f"{'ID':<36}  {'STATUS':<18}  {'UPDATED':<19}  NAME")
    for project in projects:
        print(f"{project.id}  {project.status:<18}  {_when(project.updated_at):<19}  {project.name}")
    return 0


def _project(records: RecordsStore, project_id: UUID) -> Project:
    project = records.get_project(project_id)
    if project is None:
        raise ConfigurationError(f"No project with id {project_id}")
    return project


def _show(args: argparse.Namespace, settings: Settings, records: RecordsStore) -> int:
    project = _project(records, args.project_id)
    dataset = records.latest_dataset(project.id)
    models = records.list_models(project.id)
    model = models[-1] if models else None
    logs = list(reversed(records.recent_logs(project.id, limit=10)))
    if args.json:
        print(
            json.dumps(
                {
                    "project": project.model_dump(mode="json"),
                    "dataset": dataset.model_dump(mode="json") if dataset else None,
                    "model": model.model_dump(mode="json") if model else None,
                    "logs": [log.model_dump(mode="json") for log in logs],
                }
            )
        )
        return 0
    error = project.metadata.get("error") if isinstance(project.metadata.get("error"), dict) else None
    options = {k: v for k, v in project.metadata.items() if k not in ("error", "training_run")}
    lines = [
        f"project   {project.id}",
        f"name      {project.name}",
        f"status    {project.status}",
        f"created   {_when(project.created_at)}",
        f"updated   {_when(project.updated_at)}",
        f"metadata  {json.dumps(options, default=str)}",
    ]
    if error:
        lines.append(f"error     {error.get('message')} (step {error.get('step')})")
    lines.append(f"dataset   {dataset.gcs_url if dataset else '-'}")
    if model:
        accuracy = model.metadata.get("test_accuracy")
        lines.append(f"model     {model.gcs_url} (test accuracy {accuracy})")
    else:
        lines.append("model     -")
    lines.append(f"logs      the last {len(logs)}:" if logs else "logs      -")
    lines += [f"  {_log_line(log)}" for log in logs]
    print("\n".join(lines))
    return 0


def _logs(args: argparse.Namespace, settings: Settings, records: RecordsStore) -> int:
    project = _project(records, args.project_id)
    levels = LogLevel(args.level).and_above() if args.level else None
    seen: set[UUID] = set()
    rows = records.recent_logs(project.id, limit=args.tail, levels=levels)
    _print_new(rows, seen)
    if not args.follow:
        return 0
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a follow ends by hand: not a failure
        _follow(records, project.id, levels, seen)
    return 0


def _follow(records: RecordsStore, project_id: UUID, levels: list[str] | None, seen: set[UUID]) -> None:
    """Print new rows every poll until the project has left its running states for `_SETTLE_S`."""
    while True:
        project = records.get_project(project_id)
        # Read the status before the rows: a row written before the status changed is then always shown.
        _print_new(records.recent_logs(project_id, limit=_WINDOW, levels=levels), seen)
        if project is None:
            print(f"project {project_id}: deleted", file=sys.stderr)
            return
        if project.status not in RUNNING_STATES:
            left = project.updated_at or datetime.now(timezone.utc)
            if left.tzinfo is None:  # a store that dropped the zone wrote UTC
                left = left.replace(tzinfo=timezone.utc)
            if (datetime.now(timezone.utc) - left).total_seconds() >= _SETTLE_S:
                print(f"project {project_id}: {project.status}", file=sys.stderr)
                return
        time.sleep(_POLL_S)


def _print_new(newest_first: list[AgentLog], seen: set[UUID]) -> None:
    for log in reversed(newest_first):
        if log.id not in seen:
            seen.add(log.id)
            print(_log_line(log), flush=True)


def _log_line(log: AgentLog) -> str:
    return f"{_when(log.created_at)}  {log.log_level.upper():<7}  {log.message}"


def _when(moment: datetime | None) -> str:
    """UTC to the second: the same clock for rows written by different machines."""
    if moment is None:
        return "-"
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
