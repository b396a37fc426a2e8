"""kopf handlers: each a decorator and a call into the Reconciler (reconcile.py does the work).

Registered into a given registry by `register()`, so the CLI and each test build their own operator.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

import kopf

from training_agent.controller.distributed import JOBSET_GROUP, JOBSET_VERSION, JOBSETS
from training_agent.controller.reconcile import InvalidSpec, Reconciler
from training_agent.core.trainingrun import GROUP, LABEL_RUN, MANAGED_BY, PLURAL, VERSION

RUNS = (GROUP, VERSION, PLURAL)
FINALIZER = f"{GROUP}/training-agent"


def _post_event(run: dict[str, Any], kind: str, reason: str, message: str) -> None:
    kopf.event(cast(kopf.Body, run), type=kind, reason=reason, message=message)


def _adopt(job: dict[str, Any], run: dict[str, Any]) -> None:
    kopf.adopt(job, owner=cast(kopf.Body, run))  # owner reference: the cluster deletes the Job with its run


def configure(settings: kopf.OperatorSettings, *, standalone: bool, peering_name: str) -> None:
    # Keep kopf's bookkeeping in annotations, so `status` holds only what users read (kubectl get tr).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.persistence.finalizer = FINALIZER
    # Our own Events say what happened to a run; kopf's per-handler log lines would drown them.
    settings.posting.level = logging.WARNING
    # Several replicas: kopf peering lets one act and keeps the others on stand-by.
    settings.peering.standalone = standalone
    settings.peering.name = peering_name
    settings.peering.mandatory = not standalone
    # Handlers spend their time waiting on the API server and the records store, not on the CPU: more
    # threads than kopf's default (CPUs + 4) keep a burst of runs from queueing behind each other.
    settings.execution.max_workers = 32


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler, *, resync_seconds: float) -> None:
    @kopf.on.resume(*RUNS, registry=registry)
    @kopf.on.create(*RUNS, registry=registry)
    def run_created(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
        try:
            reconciler.ensure_job(dict(body), _adopt)
        except InvalidSpec as exc:
            raise kopf.PermanentError(str(exc)) from exc
        reconciler.reconcile(str(namespace), name, _post_event)

    @kopf.on.event(
        "batch", "v1", "jobs", labels={"app.kubernetes.io/managed-by": MANAGED_BY}, registry=registry
    )
    def job_changed(labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
        reconciler.reconcile(str(namespace), labels[LABEL_RUN], _post_event)

    if reconciler.settings.trainer_workload == "jobset":
        # A JobSet ends a moment after its Job: watched so the run's end shows at once, not at the resync.
        # Only where JobSets are used: the resource does not exist in a cluster without JobSet.
        @kopf.on.event(
            JOBSET_GROUP, JOBSET_VERSION, JOBSETS, labels={LABEL_RUN: kopf.PRESENT}, registry=registry
        )
        def jobset_changed(labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
            reconciler.reconcile(str(namespace), labels[LABEL_RUN], _post_event)

    @kopf.on.event("", "v1", "pods", labels={LABEL_RUN: kopf.PRESENT}, registry=registry)
    def pod_changed(labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
        reconciler.reconcile(str(namespace), labels[LABEL_RUN], _post_event)

    # Level-triggered safety net: image-pull grace periods, pending timeouts and trainers' leases expire, and
    # progress moves, without any Kubernetes event.
    @kopf.timer(*RUNS, interval=resync_seconds, registry=registry)
    def resync(namespace: str | None, name: str, **_: Any) -> None:
        reconciler.reconcile(str(namespace), name, _post_event)

    @kopf.on.delete(*RUNS, registry=registry)
    def run_deleted(body: kopf.Body, **_: Any) -> None:
        reconciler.cancelled(dict(body), _post_event)

    @kopf.on.cleanup(registry=registry)
    def stopping(**_: Any) -> None:
        reconciler.close()

    @kopf.on.probe(id="reconciled", registry=registry)
    def reconciled(**_: Any) -> int:
        return reconciler.reconciled
