"""The controller's work, apart from kopf: create the run's Job, and carry Job/Pod state into the run's
status, the project's status and agent_logs; reap a run whose trainer stopped renewing its lease.

Level-triggered: every call reads the Job and its Pods afresh and derives the phase, so a replayed event, a
restarted controller or a missed watch event changes nothing but what is out of date. Transitions are
detected against the phase stored in the run's status, which survives restarts.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

import pydantic
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from training_agent.controller.distributed import multi_node
from training_agent.controller.manifests import build_objects
from training_agent.controller.metrics import ControllerMetrics
from training_agent.controller.progress import run_progress
from training_agent.controller.status import (
    DELETE_JOB,
    UNREPORTED_BY_TRAINER,
    Observed,
    derive,
    lease_lapsed,
)
from training_agent.controller.workers import name_failed_worker, worker_states
from training_agent.controller.workload import Workload, plain
from training_agent.core import logs as logctx
from training_agent.core.callbacks import CallbackSender
from training_agent.core.completion import log_failed
from training_agent.core.kube import TrainingRuns
from training_agent.core.lease import fail_run, lease_message, run_of
from training_agent.core.logs import AgentLog
from training_agent.core.records import ProjectStatus, RecordsStore
from training_agent.core.runs import PROGRESS_WINDOW, RunPhase, progress_from_logs, step_progress
from training_agent.core.settings import Settings
from training_agent.core.storage import ObjectStorage
from training_agent.core.sweep import remove_run_leftovers
from training_agent.core.trainingrun import LABEL_RUN, TrainingRunSpec

logger = logging.getLogger(__name__)

# (run body, event type, reason, message): how transitions become Kubernetes Events (kopf.event in the
# operator, a list in unit tests).
PostEvent = Callable[[dict[str, Any], str, str, str], None]
Adopt = Callable[[dict[str, Any], dict[str, Any]], None]
LEASE_EXPIRED = "LeaseExpired"
FINAL_PHASES = frozenset(p.value for p in (RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.CANCELLED))


class InvalidSpec(ValueError):
    """The TrainingRun's spec can never become a Job."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        records: RecordsStore,
        api: client.ApiClient,
        metrics: ControllerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or ControllerMetrics()
        self.records = records
        self.core = client.CoreV1Api(api)
        self.api = api
        self.workload = Workload(api)
        self._storage: ObjectStorage | None = None
        self._locks: dict[tuple[str, str], threading.Lock] = collections.defaultdict(threading.Lock)
        self.reconciled = 0
        # The controller sees every Kubernetes run end: it reports them to their starts' callback URLs,
        # from the sender's own thread (a slow receiver never holds up a reconcile).
        self.callbacks = CallbackSender(settings, records)

    def close(self) -> None:
        """At shutdown: reports still queued get a last try."""
        self.callbacks.close()

    def _runs(self, namespace: str) -> TrainingRuns:
        return TrainingRuns(self.api, namespace)

    # -- the Job ----------------------------------------------------------------------------------------
    def ensure_job(self, run: dict[str, Any], adopt: Adopt) -> dict[str, Any] | None:
        """Create the run's one Job (with its headless Service for several nodes, or a JobSet instead:
        workload.py); an existing one (409) is kept, and one that existed is never made
        again: a Job deleted on purpose (a hung trainer reaped, an image that never pulls, a pod that can
        never be scheduled) or by someone must not come back when the handler runs again (a controller
        restart resumes every run). Returns the Job, or None when the run had one before. Raises
        InvalidSpec for a spec that can never work."""
        meta = run["metadata"]
        try:
            spec = TrainingRunSpec.model_validate(run.get("spec") or {})
        except pydantic.ValidationError as exc:
            raise InvalidSpec(f"Invalid TrainingRun spec: {exc}") from exc
        namespace, name = str(meta["namespace"]), str(meta["name"])
        objects = build_objects(name, namespace, spec)
        for obj in objects:
            adopt(obj, run)
        # Under the run's lock and from a fresh read: the event's copy of the run can predate its status.
        with self._locks[(namespace, name)], logctx.bound(spec.project_id, name):
            if self._had_job(namespace, name):
                return None
            created = self.workload.create(namespace, objects)
            self.metrics.job_created(run)
            return created

    def _had_job(self, namespace: str, name: str) -> bool:
        try:
            status = self._runs(namespace).get(name).get("status") or {}
        except ApiException as exc:
            if exc.status == 404:
                return True  # the run is gone: nothing to make a Job for
            raise
        return bool(status.get("jobName")) or status.get("phase") in FINAL_PHASES

    @staticmethod
    def _spec(run: dict[str, Any]) -> TrainingRunSpec | None:
        """The run's spec, or None for one that cannot be read (its Job was never made: InvalidSpec)."""
        try:
            return TrainingRunSpec.model_validate(run.get("spec") or {})
        except pydantic.ValidationError:
            return None

    def _pods(self, namespace: str, name: str) -> list[dict[str, Any]]:
        listed = self.core.list_namespaced_pod(namespace, label_selector=f"{LABEL_RUN}={name}")
        pods = [plain(self.api, p) for p in listed.items]
        # Filter here as well: the selector is a request the server may not honour (test servers do not).
        return [p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(LABEL_RUN) == name]

    # -- status -----------------------------------------------------------------------------------------
    def reconcile(self, namespace: str, name: str, post_event: PostEvent) -> RunPhase | None:
        """Bring the run's status up to date with its Job; returns the phase, or None if the run is gone
        (counted, timed and logged with the run's name: metrics.py)."""
        with self.metrics.reconciling() as outcome, logctx.bound(run_name=name):
            phase = self._reconcile(namespace, name, post_event)
            outcome["result"] = "ok" if phase is not None else "gone"
            self.metrics.phase(namespace, name, phase)
            return phase

    def _reconcile(self, namespace: str, name: str, post_event: PostEvent) -> RunPhase | None:
        """The run is read inside the per-run lock, never taken from the triggering event: an event's copy
        can predate a status this process just wrote, and rewriting from it would drop conditions."""
        with self._locks[(namespace, name)]:
            try:
                run = self._runs(namespace).get(name)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            if (run.get("metadata") or {}).get("deletionTimestamp"):
                return None  # being deleted: the delete handler settles it
            if (run.get("spec") or {}).get("projectId"):
                logctx.bind(run["spec"]["projectId"], name)
            status: dict[str, Any] = dict(run.get("status") or {})
            stored = status.get("phase")
            if stored in FINAL_PHASES:
                return RunPhase(stored)  # final: never reopened by a late event
            spec = self._spec(run)
            job = self.workload.read(namespace, name, spec) if spec is not None else None
            pods = self._pods(namespace, name) if job else []
            now = _now()
            observed = derive(
                job,
                pods,
                now=now,
                image_pull_grace_s=float((run.get("spec") or {}).get("imagePullGraceSeconds", 300)),
                pending_timeout_s=float(self.settings.trainer_pending_timeout_seconds),
                job_was_created=bool(status.get("jobName")),
            )
            if observed.phase == RunPhase.RUNNING:
                observed = self._reap(run, pods, now) or observed
            if spec is not None and multi_node(spec):
                observed = name_failed_worker(observed, pods, spec.nodes)
            if observed.phase == RunPhase.FAILED and observed.reason in DELETE_JOB:
                # It would wait (for an image, a node, a hung trainer).
                self.workload.delete(namespace, name, spec)
            new = self._status(run, status, observed, job)
            if spec is not None and multi_node(spec):
                new["workers"] = worker_states(pods)
            if new != status:
                self._runs(namespace).patch_status(name, new)
            if new.get("phase") != stored:
                self._transitioned(run, observed, post_event)
            self.reconciled += 1
            return observed.phase

    def _status(
        self, run: dict[str, Any], status: dict[str, Any], observed: Observed, job: dict[str, Any] | None
    ) -> dict[str, Any]:
        new = {
            **status,
            "phase": observed.phase.value,
            "reason": observed.reason,
            "message": observed.message,
        }
        if job is not None:
            new["jobName"] = run["metadata"]["name"]
        now = _iso(_now())
        if observed.phase == RunPhase.RUNNING and not status.get("startTime"):
            new["startTime"] = now
        if observed.terminal and not status.get("completionTime"):
            new["completionTime"] = now
        if status.get("phase") != observed.phase.value:
            conditions = [c for c in status.get("conditions") or [] if c.get("type") != observed.phase.value]
            conditions.append(
                {
                    "type": observed.phase.value,
                    "status": "True",
                    "reason": observed.reason,
                    "message": observed.message,
                    "lastTransitionTime": now,
                }
            )
            new["conditions"] = conditions
        project_id = UUID(run["spec"]["projectId"])
        if observed.phase in (RunPhase.RUNNING, RunPhase.SUCCEEDED):
            new["progress"] = self._progress(project_id, run, finished=observed.phase == RunPhase.SUCCEEDED)
        if observed.phase == RunPhase.SUCCEEDED:
            models = self.records.list_models(project_id)
            if models:
                new["modelUrl"] = models[-1].gcs_url
        return new

    def _progress(self, project_id: UUID, run: dict[str, Any], *, finished: bool) -> dict[str, Any]:
        """From the records, so the trainer needs no Kubernetes access: the per-epoch agent_logs rows and the
        in-epoch progress its heartbeat writes into the run record."""
        logs = self.records.recent_logs(project_id, limit=PROGRESS_WINDOW)
        epochs = progress_from_logs(logs, (run.get("spec") or {}).get("epochs"))
        project = self.records.get_project(project_id)
        live = step_progress(run_of(project)) if project is not None else None
        return run_progress(epochs, live, finished=finished)

    def _transitioned(self, run: dict[str, Any], observed: Observed, post_event: PostEvent) -> None:
        kind = "Warning" if observed.phase in (RunPhase.FAILED, RunPhase.CANCELLED) else "Normal"
        post_event(run, kind, observed.reason, observed.message or observed.phase.value)
        if observed.phase == RunPhase.FAILED:
            self.metrics.job_failures.labels(reason=observed.reason).inc()
        project_id = UUID(run["spec"]["projectId"])
        if observed.phase == RunPhase.SUCCEEDED:
            self.callbacks.run_ended(project_id)
        if observed.phase not in (RunPhase.FAILED, RunPhase.CANCELLED):
            return
        if observed.reason in UNREPORTED_BY_TRAINER:
            self.fail_project(project_id, run["metadata"]["name"], observed)
        self.callbacks.run_ended(project_id)
        self._remove_ended_run_leftovers(project_id)

    def fail_project(self, project_id: UUID, run_name: str, observed: Observed) -> bool:
        """Mark the project failed with the cluster's reason, only if it is still `training`: what the
        trainer wrote itself (its own failure, or success) is never overwritten."""
        message = f"{observed.reason}: {observed.message}" if observed.message else observed.reason
        error = {
            "message": message,
            "type": observed.reason,
            "step": "kubernetes",
            "run_name": run_name,
            "traceback": None,
            "failed_at": _now().isoformat(),
        }
        moved = self.records.transition_project(
            project_id,
            from_status=ProjectStatus.TRAINING.value,
            to_status=ProjectStatus.FAILED.value,
            metadata_patch={"error": error},
        )
        if moved is not None:
            log_failed(AgentLog(self.records, project_id, self.settings.agent_name), moved.name, error)
        return moved is not None

    # -- leases ------------------------------------------------------------------------------------------
    def _reap(self, run: dict[str, Any], pods: list[dict[str, Any]], now: datetime) -> Observed | None:
        """The running trainer stopped renewing its lease: fail the project (only this run of it, only while
        it is `training`), remove the run's checkpoints, and return the ending; None while the lease holds.

        Also finishes a reaping that a previous controller began and could not complete (the project failed
        by the lease, the run's status not yet): the Job is deleted on the way out either way."""
        project_id = UUID(run["spec"]["projectId"])
        project = self.records.get_project(project_id)
        if project is None:
            return None
        record = run_of(project)
        error = project.metadata.get("error")
        if project.status == ProjectStatus.TRAINING.value:
            if not lease_lapsed(record, pods, now=now, lease_s=self.settings.run_lease_seconds):
                return None
            message = lease_message(record)
            if not fail_run(
                self.records,
                project_id,
                message,
                agent_name=self.settings.agent_name,
                run_id=record.get("run_id"),
                step="kubernetes",
                error_type=LEASE_EXPIRED,
            ):
                return None  # it ended meanwhile (the trainer reported, or it is another run now)
            logger.warning("Reaped %s: %s", run["metadata"]["name"], message)
            self.metrics.leases_expired.inc()
        elif (
            project.status == ProjectStatus.FAILED.value
            and isinstance(error, dict)
            and error.get("type") == LEASE_EXPIRED
        ):
            message = str(error.get("message") or lease_message(record))
        else:
            return None
        if record.get("run_id"):
            self._remove_leftovers(project_id, str(record["run_id"]))
        return Observed(RunPhase.FAILED, LEASE_EXPIRED, message)

    def _remove_ended_run_leftovers(self, project_id: UUID) -> None:
        """A run that failed or was cancelled will never resume: its checkpoints go. Only while the
        project is not `training` — if it is, a new run (with its own id) has started meanwhile."""
        project = self.records.get_project(project_id)
        run_id = run_of(project).get("run_id") if project is not None else None
        if project is not None and project.status != ProjectStatus.TRAINING.value and run_id:
            self._remove_leftovers(project_id, str(run_id))

    def _remove_leftovers(self, project_id: UUID, run_id: str) -> None:
        """The reaped run's checkpoint objects: it will never resume them (a new start is a new run)."""
        try:
            if self._storage is None:
                self._storage = ObjectStorage(self.settings)
            remove_run_leftovers(self.settings, self._storage, project_id, run_id)
        except Exception:
            logger.warning(
                "Could not remove the leftovers of run %s of %s", run_id, project_id, exc_info=True
            )

    # -- deletion ---------------------------------------------------------------------------------------
    def cancelled(self, run: dict[str, Any], post_event: PostEvent) -> None:
        """The TrainingRun is being deleted: stop its Job and fail the project as cancelled."""
        meta = run["metadata"]
        self.metrics.phase(meta["namespace"], meta["name"], None)
        with self._locks[(meta["namespace"], meta["name"])]:
            self.workload.delete(meta["namespace"], meta["name"], self._spec(run))
            phase = (run.get("status") or {}).get("phase")
            if phase in (RunPhase.SUCCEEDED.value, RunPhase.FAILED.value):
                return
            observed = Observed(RunPhase.CANCELLED, "Cancelled", "The TrainingRun was deleted")
            post_event(run, "Warning", observed.reason, observed.message)
            project_id = UUID(run["spec"]["projectId"])
            self.fail_project(project_id, meta["name"], observed)
            self.callbacks.run_ended(project_id)
            self._remove_ended_run_leftovers(project_id)
