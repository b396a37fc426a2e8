"""Read-only operations beside service.py's: list the runs, read a project's logs, check a dataset's layout.
The runs and logs routes and the MCP tools answer with them; none of them changes a record."""

from __future__ import annotations

from uuid import UUID

from training_agent.api import preflight
from training_agent.api.errors import BadRequest, Unavailable
from training_agent.api.schemas import DatasetCheck, LogEntry, LogsResponse, RunsResponse, RunSummary
from training_agent.api.service import get_project, run_from_records
from training_agent.core.errors import StorageError
from training_agent.core.records import LogLevel, Project, ProjectStatus, RecordsStore
from training_agent.core.settings import Settings
from training_agent.core.storage import ObjectStorage

# The statuses this agent reads or writes: other agents' projects (in their own statuses) are not runs.
TRAINING_STATUSES = tuple(status.value for status in ProjectStatus)


def _summary(project: Project) -> RunSummary:
    error = project.metadata.get("error") if project.status == ProjectStatus.FAILED.value else None
    message = error.get("message") if isinstance(error, dict) else None
    return RunSummary(
        project_id=project.id,
        project_name=project.name,
        status=project.status,
        run=run_from_records(project),
        error=message if isinstance(message, str) else None,
        created_at=project.created_at,
        updated_at=project.updated_at,
    )


def list_runs(records: RecordsStore, status: ProjectStatus | None, limit: int) -> RunsResponse:
    """Projects in `status` (None: any of the training agent's statuses), most recently updated first. The
    run comes from the records alone: one executor call per project would make a long list slow."""
    statuses = [status.value] if status is not None else TRAINING_STATUSES
    projects = records.list_projects(statuses=statuses, limit=limit)
    return RunsResponse(runs=[_summary(project) for project in projects])


def training_logs(project_id: UUID, records: RecordsStore, level: LogLevel | None, tail: int) -> LogsResponse:
    """The project's newest `tail` agent_logs rows at `level` or above (None: all), oldest first."""
    get_project(records, project_id)  # 404 for an unknown project, not an empty list
    levels = None if level is None else level.and_above()
    rows = records.recent_logs(project_id, limit=tail, levels=levels)
    logs = [LogEntry.model_validate(row.model_dump()) for row in reversed(rows)]
    return LogsResponse(project_id=project_id, logs=logs)


def check_dataset(
    project_id: UUID, records: RecordsStore, storage: ObjectStorage, settings: Settings
) -> DatasetCheck:
    """The start's layout pre-flight on the project's latest dataset, whatever the project's status and
    TRAINING_AGENT_PREFLIGHT say, and without its side effects: a refused dataset is an answer here
    (`ok` false, the reason), not a failed project."""
    project = get_project(records, project_id)
    dataset = records.latest_dataset(project_id)
    if dataset is None or not dataset.gcs_url:
        raise BadRequest(f"Project {project_id} has no dataset with a gcs_url; register its dataset first")
    url = dataset.gcs_url
    try:
        layout = preflight.read_layout(project, url, storage=storage, settings=settings)
    except preflight.Refused as exc:
        return DatasetCheck(project_id=project_id, dataset_url=url, ok=False, reason=exc.message)
    except StorageError as exc:
        raise Unavailable(f"The dataset could not be read to check it, try again: {exc}") from exc
    if layout.plan is None:
        return DatasetCheck(
            project_id=project_id, dataset_url=url, ok=True, reason=None, nested_zip=layout.nested_zip
        )
    summary = layout.plan.summary()
    return DatasetCheck(
        project_id=project_id,
        dataset_url=url,
        ok=True,
        reason=None,
        classes=summary["classes"],
        images=summary["images"],
        images_per_class=summary["images_per_class"],
        split_folders=summary["split_folders"],
    )
