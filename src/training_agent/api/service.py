"""What the routes do, apart from HTTP: accept a start (validate, claim, hand to the executor) and assemble
a project's status. Executor-agnostic, so the kubernetes executor reuses it unchanged."""

from __future__ import annotations

import logging
from uuid import UUID

from training_agent.api import preflight
from training_agent.api.errors import BadRequest, Conflict, NotFound, Unavailable
from training_agent.api.executors import Executor
from training_agent.api.executors.base import CANCELLED_ERROR_TYPE
from training_agent.api.schemas import CancelResponse, LogEntry, StartResponse, StatusResponse
from training_agent.core.callbacks import CallbackRefused, check_callback_url
from training_agent.core.completion import log_failed
from training_agent.core.lease import claim_project, run_id_of, run_of
from training_agent.core.logs import AgentLog
from training_agent.core.records import ProjectStatus, RecordsStore
from training_agent.core.records.models import ModelRecord, Project, utcnow
from training_agent.core.runs import (
    INITIATED,
    PROGRESS_WINDOW,
    RunInfo,
    RunPhase,
    progress_from_logs,
    run_name,
    step_progress,
)
from training_agent.core.settings import Settings
from training_agent.core.storage import ObjectStorage

logger = logging.getLogger(__name__)

_TERMINAL_PHASES = {
    ProjectStatus.PENDING_EVALUATION.value: RunPhase.SUCCEEDED,
    ProjectStatus.FAILED.value: RunPhase.FAILED,
}
_DEFAULT_EPOCHS = 10


def _ended_phase(project: Project) -> RunPhase | None:
    """How the project's run ended, as the records tell it (None while it has not)."""
    phase = _TERMINAL_PHASES.get(project.status)
    error = project.metadata.get("error")
    if phase == RunPhase.FAILED and isinstance(error, dict) and error.get("type") == CANCELLED_ERROR_TYPE:
        return RunPhase.CANCELLED
    return phase


def status_url(project_id: UUID) -> str:
    return f"/agents/training/status/{project_id}"


def get_project(records: RecordsStore, project_id: UUID) -> Project:
    project = records.get_project(project_id)
    if project is None:
        raise NotFound(f"Project {project_id} not found")
    return project


def start_training(
    project_id: UUID,
    records: RecordsStore,
    executor: Executor,
    settings: Settings,
    storage: ObjectStorage,
    *,
    callback_url: str | None = None,
) -> StartResponse:
    """Requirement 1.1-1.5: check the project and its dataset (the pre-flight), claim it, hand it to the
    executor. `callback_url` (checked once the project is known to exist — an unknown one is a 404 whatever
    else the body says — and before anything changes) is kept in the run record."""
    project = get_project(records, project_id)
    if callback_url is not None:
        try:
            check_callback_url(callback_url, settings)
        except CallbackRefused as exc:
            raise BadRequest(str(exc)) from exc
    if project.status != ProjectStatus.PENDING_TRAINING.value:
        raise BadRequest(
            f"Project {project_id} is in status {project.status!r}; "
            "only projects in 'pending_training' can be started"
        )
    dataset = records.latest_dataset(project_id)
    if dataset is None or not dataset.gcs_url:
        raise BadRequest(f"Project {project_id} has no dataset with a gcs_url; register its dataset first")
    # Before the claim: a dataset the layout rules refuse fails the project here, and no run is created.
    passed = preflight.check_dataset(
        project, dataset.gcs_url, records=records, storage=storage, settings=settings
    )
    name = run_name(project_id)
    claimed = claim_project(records, project_id, executor.name, callback_url=callback_url)
    if claimed is None:
        # Another request claimed it between our read and our compare-and-set.
        raise Conflict(
            f"Project {project_id} was just started by another request; see {status_url(project_id)}"
        )
    log = AgentLog(records, project_id, settings.agent_name)
    if passed is not None:
        log.info(passed.message, **passed.details)
    log.info(
        INITIATED,
        run_name=name,
        run_id=run_id_of(claimed),
        executor=executor.name,
        dataset_url=dataset.gcs_url,
    )
    try:
        run = executor.submit(project_id)
    except Exception as exc:
        message = f"The {executor.name} executor could not take the run: {exc}"
        error = {
            "message": message,
            "type": type(exc).__name__,
            "step": "submit",
            "traceback": None,
            "failed_at": utcnow().isoformat(),
        }
        moved = records.transition_project(
            project_id,
            from_status=ProjectStatus.TRAINING.value,
            to_status=ProjectStatus.FAILED.value,
            metadata_patch={"error": error},
        )
        if moved is not None:  # the run's closing row; the caller has its answer in the 503 already
            log_failed(log, moved.name, error)
        raise Unavailable(message) from exc
    return StartResponse(
        project_id=project_id,
        run_name=name,
        phase=run.phase.value,
        queue_position=run.queue_position,
        status_url=status_url(project_id),
    )


def cancel_training(project_id: UUID, records: RecordsStore, executor: Executor) -> CancelResponse:
    """Stop a project's run; the project ends `failed` with "Cancelled" as the reason."""
    project = get_project(records, project_id)
    if project.status != ProjectStatus.TRAINING.value:
        raise Conflict(
            f"Project {project_id} is in status {project.status!r}; only a training run can be cancelled"
        )
    if not executor.cancel(project_id):
        current = get_project(records, project_id)
        if current.status != ProjectStatus.TRAINING.value:  # it ended while the cancel was on its way
            raise Conflict(f"Project {project_id} is in status {current.status!r}; its run has ended")
        raise NotFound(f"Project {project_id} has no run in the {executor.name} executor")
    return CancelResponse(project_id=project_id, run_name=run_name(project_id))


def run_from_records(project: Project) -> RunInfo | None:
    """The run as the records tell it, for runs this server process did not start (or forgot)."""
    run = run_of(project)
    if not run:
        return None
    phase = _ended_phase(project) or {
        ProjectStatus.TRAINING.value: RunPhase.RUNNING,
        ProjectStatus.PENDING_TRAINING.value: RunPhase.PENDING,
    }.get(project.status, RunPhase.SUCCEEDED)
    return RunInfo(
        name=str(run.get("name") or run_name(project.id)),
        executor=str(run.get("executor") or "unknown"),
        phase=phase,
        pid=run.get("pid") if isinstance(run.get("pid"), int) else None,
    )


def _picture_url(model: ModelRecord | None, key: str) -> str | None:
    """A picture beside the model (`curves_url`, `confusion_url`); models recorded before they existed
    have none."""
    value = model.metadata.get(key) if model else None
    return value if isinstance(value, str) else None


def training_status(
    project_id: UUID, records: RecordsStore, executor: Executor, log_limit: int
) -> StatusResponse:
    """Requirement 9.2: status, run phase, progress, model URL (and its pictures') or error, and the latest
    logs."""
    project = get_project(records, project_id)
    run = executor.describe(project_id) or run_from_records(project)
    terminal = _ended_phase(project)
    if run is not None and terminal is not None and run.phase in (RunPhase.RUNNING, RunPhase.QUEUED):
        # The trainer has reported its outcome and its process is still exiting: the records are ahead.
        run = run.model_copy(update={"phase": terminal})
    recent = records.recent_logs(project_id, limit=max(log_limit, PROGRESS_WINDOW))
    configured = project.metadata.get("epochs")
    progress = progress_from_logs(recent, configured if isinstance(configured, int) else _DEFAULT_EPOCHS)
    if project.status == ProjectStatus.TRAINING.value:  # once the run ended, the per-epoch fields tell it
        progress.live = step_progress(run_of(project))
    models = records.list_models(project_id)
    model = models[-1] if models else None
    error = project.metadata.get("error") if project.status == ProjectStatus.FAILED.value else None
    return StatusResponse(
        project_id=project_id,
        project_name=project.name,
        status=project.status,
        run=run,
        progress=progress,
        model_url=model.gcs_url if model else None,
        curves_url=_picture_url(model, "curves_url"),
        confusion_url=_picture_url(model, "confusion_url"),
        error=error if isinstance(error, dict) else None,
        logs=[LogEntry.model_validate(row.model_dump()) for row in recent[:log_limit]],
    )
