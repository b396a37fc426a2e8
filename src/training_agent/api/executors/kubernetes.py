"""Hand accepted runs to the cluster: one TrainingRun per project, which the controller turns into a Job.

The TrainingRun is named after the project, so a second submission finds the first run (409) instead of
making another. The controller owns everything after creation, including restarts: this executor keeps
no state of its own.

One gap is this executor's to close: an API process that stops between the claim (the project `training`,
the run record written) and the TrainingRun's creation leaves a run that no controller can see. Such a run
is failed at start-up and on each of the reaper's passes, once it is older than a lease (`reap_unsubmitted`).
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from uuid import UUID

from kubernetes.client.exceptions import ApiException

from training_agent.api.executors.base import Executor, OnFinish
from training_agent.core.callbacks import CallbackSender
from training_agent.core.kube import TrainingRuns, api_client
from training_agent.core.lease import fail_run, lease_expired, run_of
from training_agent.core.records import ProjectStatus, RecordsStore
from training_agent.core.runs import RunInfo, RunPhase, run_name
from training_agent.core.settings import Settings
from training_agent.core.trainingrun import TrainingRunSpec, trainingrun_manifest

logger = logging.getLogger(__name__)

UNSUBMITTED_MESSAGE = (
    "The run was accepted but never reached the cluster (the API stopped before creating its TrainingRun); "
    "start the project again"
)
UNSUBMITTED_ERROR_TYPE = "NotSubmitted"


def spec_for(project_id: UUID, metadata: dict[str, Any], settings: Settings) -> TrainingRunSpec:
    """The run's spec: the project's training options (shown by kubectl) and the cluster defaults."""

    def option(key: str, kind: type) -> Any:
        value = metadata.get(key)
        return value if isinstance(value, kind) and not isinstance(value, bool) else None

    return TrainingRunSpec(
        project_id=project_id,
        image=settings.trainer_image,
        image_pull_policy=settings.trainer_image_pull_policy,
        model=option("preferred_model", str) or "resnet18",
        epochs=option("epochs", int),
        learning_rate=option("learning_rate", float),
        batch_size=option("batch_size", int),
        image_size=option("image_size", int),
        gpus=settings.trainer_gpus,
        nodes=settings.trainer_nodes,
        workload="JobSet" if settings.trainer_workload == "jobset" else "Job",
        success_policy="Leader" if settings.trainer_success_policy == "leader" else "All",
        resources=settings.trainer_resources,
        node_selector=settings.trainer_node_selector,
        tolerations=settings.trainer_tolerations,
        priority_class_name=settings.trainer_priority_class,
        runtime_class_name=settings.trainer_runtime_class,
        service_account_name=settings.trainer_service_account,
        env_secret_name=settings.trainer_env_secret,
        env_config_map_name=settings.trainer_env_configmap,
        gcs_secret_name=settings.trainer_gcs_secret,
        shm_size_limit=settings.trainer_shm_size,
        active_deadline_seconds=settings.trainer_deadline_seconds,
        backoff_limit=settings.trainer_backoff_limit,
        ttl_seconds_after_finished=settings.trainer_ttl_seconds,
        image_pull_grace_seconds=settings.trainer_image_pull_grace_seconds,
        termination_grace_seconds=settings.trainer_termination_grace_seconds,
        queue_name=settings.trainer_queue_name,
    )


def _info(run: dict[str, Any]) -> RunInfo:
    status = run.get("status") or {}
    phase = status.get("phase") or RunPhase.PENDING.value
    return RunInfo(
        name=run["metadata"]["name"],
        executor=KubernetesExecutor.name,
        phase=RunPhase(phase) if phase in RunPhase._value2member_map_ else RunPhase.PENDING,
        started_at=status.get("startTime"),
        finished_at=status.get("completionTime"),
        message=status.get("message"),
    )


class KubernetesExecutor(Executor):
    name = "kubernetes"

    def __init__(
        self,
        settings: Settings,
        records: RecordsStore,
        runs: TrainingRuns | None = None,
        *,
        on_finish: OnFinish | None = None,
    ) -> None:
        self.settings = settings
        self.records = records
        self.runs = runs or TrainingRuns(api_client(settings), settings.namespace)
        self.on_finish = on_finish
        # Runs seen in a final phase at the last count; None before the first (those ended before it).
        self._ended: set[tuple[str, str]] | None = None
        self._count_lock = threading.Lock()
        # The controller reports the runs it sees end; a run that never reached the cluster is this
        # executor's to report.
        self.callbacks = CallbackSender(settings, records)

    def submit(self, project_id: UUID) -> RunInfo:
        project = self.records.get_project(project_id)
        spec = spec_for(project_id, project.metadata if project else {}, self.settings)
        try:
            created = self.runs.create(trainingrun_manifest(spec, self.settings.namespace)) or self.runs.get(
                run_name(project_id)
            )
        except ApiException as exc:
            if exc.status != 409:
                raise
            logger.info("TrainingRun %s already exists; using it", run_name(project_id))
            created = self.runs.get(run_name(project_id))
        return _info(created)

    def describe(self, project_id: UUID) -> RunInfo | None:
        try:
            return _info(self.runs.get(run_name(project_id)))
        except ApiException as exc:
            if exc.status == 404:
                return None
            logger.warning("Cannot read TrainingRun %s: %s", run_name(project_id), exc.reason)
            return None

    def cancel(self, project_id: UUID) -> bool:
        try:
            self.runs.delete(run_name(project_id))
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def recover(self) -> None:
        """At start-up: fail the runs a previous API process accepted but never handed to the cluster.
        Everything else the controller reconciles from the cluster's state. A cluster that cannot be reached
        now must not keep the API from starting: the reaper's passes try again."""
        try:
            self.reap_unsubmitted()
        except Exception:  # logged with its traceback; the next pass of the reaper tries again
            logger.warning("Could not look for runs that never reached the cluster", exc_info=True)

    def reap_unsubmitted(self) -> list[UUID]:
        """Fail each `kubernetes` run whose project is `training` but whose TrainingRun does not exist,
        accepted more than a lease (`run_lease_seconds`) ago and never heart-beaten: the API that claimed it
        stopped before creating the TrainingRun, and the controller, which sees only TrainingRuns, never
        will. The grace leaves alone a start that is still on its way (in this process or another replica).
        Returns the projects failed."""
        failed = []
        for project in self.records.projects_in_status(ProjectStatus.TRAINING.value):
            run = run_of(project)
            if not self._overdue(run) or self._exists(project.id):
                continue
            if fail_run(
                self.records,
                project.id,
                UNSUBMITTED_MESSAGE,
                agent_name=self.settings.agent_name,
                run_id=str(run["run_id"]) if run.get("run_id") else None,
                step="submit",
                error_type=UNSUBMITTED_ERROR_TYPE,
            ):
                logger.warning("Failed the run of project %s: %s", project.id, UNSUBMITTED_MESSAGE)
                self.callbacks.run_ended(project.id, run.get("run_id"))
                failed.append(project.id)
        return failed

    def _overdue(self, run: dict[str, Any]) -> bool:
        """A run of this executor that no trainer ever beat for, accepted more than a lease ago."""
        return (
            run.get("executor") == self.name
            and not run.get("heartbeat_at")
            and lease_expired(run, lease_s=self.settings.run_lease_seconds, from_accepted=True)
        )

    def _exists(self, project_id: UUID) -> bool:
        """Whether the project's TrainingRun exists; any answer but "not found" counts as yes (a cluster
        that cannot say is no reason to fail a run)."""
        try:
            self.runs.get(run_name(project_id))
        except ApiException as exc:
            if exc.status == 404:
                return False
            logger.warning("Cannot read TrainingRun %s: %s", run_name(project_id), exc.reason)
        return True

    def shutdown(self) -> None:
        """Nothing to stop: runs live in the cluster, not in this process (only reports still queued)."""
        self.callbacks.close()

    def ping(self) -> None:
        self.runs.list(limit=1)

    def counts(self) -> dict[str, int]:
        """Runs running and queued, from the namespace's TrainingRuns (the local executor counts its own
        children); each run seen ended since the previous count goes to `on_finish` once, so that runs
        finished by executor and outcome are counted here too. A cluster that cannot be listed: no counts."""
        try:
            listed = self.runs.list()
        except Exception as exc:  # noqa: BLE001 - /metrics must answer whatever the cluster does
            logger.warning("Cannot list TrainingRuns for the run metrics: %s", exc)
            return {}
        phases = [(_identity(run), _info(run).phase, run) for run in listed]
        ended = {key: (run, phase) for key, phase, run in phases if phase in _FINAL}
        with self._count_lock:
            newly = [] if self._ended is None else [ended[key] for key in ended.keys() - self._ended]
            self._ended = set(ended)
        for run, phase in newly:
            project_id = (run.get("spec") or {}).get("projectId")
            if self.on_finish is not None and project_id:
                self.on_finish(UUID(str(project_id)), phase)
        return {
            "running": sum(1 for _, phase, _ in phases if phase == RunPhase.RUNNING),
            "queued": sum(1 for _, phase, _ in phases if phase in (RunPhase.PENDING, RunPhase.QUEUED)),
        }


_FINAL = frozenset({RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.CANCELLED})


def _identity(run: dict[str, Any]) -> tuple[str, str]:
    """A run's name with its uid (or creation time): a project started again makes a new run of the same
    name, which must count as a run of its own."""
    meta = run.get("metadata") or {}
    return str(meta.get("name")), str(meta.get("uid") or meta.get("creationTimestamp") or "")
