"""The trainer's run for one project (Req 1.4-8), read top to bottom:

    claim → fetch → gate → build → prepare → fit → evaluate → publish → verify → record

Each stage is a function in `claim.py`, `stages.py` or `finish.py`. One owner of side effects (`owner.py`)
knows the run's folder and every object it wrote; the heartbeat (`heartbeat.py`) holds the run's lease.
Every failure ends with the project `failed`, an `error` in its metadata and an `agent_logs` row, what the
run wrote rolled back, and its folder removed; a stop (SIGTERM) leaves the project `training` and the
checkpoint for the retry of the same run.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from typing import Any
from uuid import UUID

from training_agent.core import logs
from training_agent.core.completion import log_failed
from training_agent.core.errors import EXIT_FAILED, Interrupted, TrainingAgentError
from training_agent.core.lease import run_id_of, update_run
from training_agent.core.logs import AgentLog
from training_agent.core.records import ProjectStatus, RecordsStore
from training_agent.core.records.models import utcnow
from training_agent.core.settings import Settings
from training_agent.core.storage import ObjectStorage
from training_agent.core.sweep import checkpoint_prefix
from training_agent.trainer import finish, stages
from training_agent.trainer.claim import CLAIM_STEP, Claim, claim, refuse
from training_agent.trainer.engine import Fitter
from training_agent.trainer.follower import Handover
from training_agent.trainer.group import SOLO, Group
from training_agent.trainer.heartbeat import Heartbeat
from training_agent.trainer.interrupt import StopSignal
from training_agent.trainer.owner import RunOwner
from training_agent.trainer.precision import pick_precision
from training_agent.trainer.preprocess import Augmentation, Preprocess
from training_agent.trainer.progress import ProgressReporter
from training_agent.trainer.replica import pick_device
from training_agent.trainer.result import RunResult, error_details
from training_agent.trainer.runlog import RunLog, failure_log_url
from training_agent.trainer.stages import RunContext

__all__ = ["RunResult", "TrainingRun", "pick_device"]

logger = logging.getLogger(__name__)


class TrainingRun:
    """Train one project. `claimed=True` means the caller (the API) already moved it to `training`."""

    def __init__(
        self,
        project_id: UUID,
        *,
        settings: Settings,
        records: RecordsStore,
        storage: ObjectStorage,
        claimed: bool = False,
        upload_retry_delay_s: float = 2.0,
        stop: StopSignal | None = None,
        progress: ProgressReporter | None = None,
        group: Group = SOLO,
    ) -> None:
        self.project_id = project_id
        self.settings = settings
        self.records = records
        self.storage = storage
        self.claimed = claimed
        self.upload_retry_delay_s = upload_retry_delay_s
        self.stop = stop or StopSignal()
        # In-epoch progress: the heartbeat writes it into the run record; a terminal may draw it too.
        self.progress = progress or ProgressReporter()
        self.log = AgentLog(records, project_id, settings.agent_name)
        self.ctx: RunContext | None = None
        self.heartbeat: Heartbeat | None = None
        self.run_log: RunLog | None = None
        self.attempt = 1
        self.project_name = str(project_id)  # until the claim has read the project
        # Under torchrun this process is rank 0; the others wait for its handover (follower.py).
        self.group = group
        self.handed_over = False

    @property
    def step(self) -> str:
        return self.ctx.step if self.ctx else CLAIM_STEP

    def execute(self) -> RunResult:
        with logs.bound(self.project_id):  # every line of the run names its project and TrainingRun
            try:
                return self._execute()
            finally:
                self._release_followers()

    def _hand_over(self, handover: Handover) -> None:
        self.group.broadcast(handover)
        self.handed_over = True

    def _release_followers(self) -> None:
        """The run ended before training (refused, failed or stopped): the other ranks may leave."""
        if self.group.distributed and not self.handed_over:
            self.handed_over = True
            self.group.broadcast(None)

    def _execute(self) -> RunResult:
        try:
            claimed = claim(self.records, self.project_id, claimed=self.claimed)
        except TrainingAgentError as exc:
            # Refused before claiming: reported, nothing changed (claim may have lost a race: read again).
            current = self.records.get_project(self.project_id)
            return refuse(self.records, self.project_id, current, exc, self.settings.agent_name)
        self.project_name = claimed.project.name
        self.attempt = claimed.attempt
        owner = RunOwner(self.settings, self.storage, self.project_id, claimed.run_id)
        # From here on, every line this process logs is also kept in the run's folder (runlog.py).
        self.run_log = run_log = RunLog(owner.work_dir / "trainer.log", self.settings.log_format)
        self.ctx = RunContext(
            self.project_id,
            claimed.run_id,
            self.settings,
            self.records,
            self.storage,
            self.log,
            owner,
            self.stop,
            run_log=run_log,
        )
        self.heartbeat = heartbeat = Heartbeat(
            self.records,
            self.project_id,
            claimed.run_id,
            interval_s=self.settings.heartbeat_seconds,
            attempt=claimed.attempt,
            on_lost=self.stop.request_soon,
            progress=self.progress.snapshot,
            progress_every_s=self.settings.progress_every_seconds,
        )
        try:
            heartbeat.start()
            result = self._train(self.ctx, claimed)
            run_log.complete(owner)
            return result
        except Interrupted as exc:
            return self._interrupted(exc)
        except Exception as exc:  # noqa: BLE001 - every failure must end as a `failed` project
            return self._fail(exc)
        except BaseException as exc:  # interrupted: record it, then let the interruption through
            self._fail(exc)
            raise
        finally:
            heartbeat.stop()
            run_log.close()
            owner.close()

    def _train(self, ctx: RunContext, claimed: Claim) -> RunResult:
        project = claimed.project
        # Claimed runs were already announced as "Training initiated" by whoever claimed them (the API).
        announcement = "Trainer started" if self.claimed else "Training initiated"
        self.log.info(
            announcement,
            project_name=project.name,
            metadata=project.metadata,
            pid=os.getpid(),
            run_id=claimed.run_id,
            attempt=claimed.attempt,
        )
        config, dataset_url = stages.load_config(ctx, project)
        dataset = stages.fetch(ctx, dataset_url)
        layout = stages.gate(ctx)

        ctx.enter("build_model")
        group = self.group
        device = pick_device(self.settings.device, group.place.local_rank)
        precision = pick_precision(device, self.settings.precision)
        resolved = stages.choose_recipe(ctx, config, layout, device, group.world_size)
        config = resolved.config
        resumed = stages.open_checkpoints(ctx, config, layout, dataset, group.world_size)
        if ctx.checkpoints is not None and resumed is None and claimed.attempt > 1:
            self.log.info("No checkpoint of this run to resume from: training from the start", resumed=False)
        # A seed drawn at random is saved with the checkpoint: a resumed epoch replays the same order.
        seed = int(resumed["seed"]) if resumed else config.seed
        if seed is None:
            seed = secrets.randbelow(2**31)
        model = stages.build(ctx, resolved, layout, device, seed, distributed=group.distributed)

        loaders = stages.prepare(ctx, layout, config, device, seed, group)
        preprocess = Preprocess(
            device,
            augmentation=Augmentation.from_config(config),
            seed=seed,
            channels_last=self.settings.channels_last,
            num_classes=len(layout.classes),
        )
        started = time.perf_counter()
        options = stages.fit_options(resolved, layout, self.settings, precision)
        lr_found = None
        if config.lr_find and not resumed:
            options, lr_found = stages.find_learning_rate(ctx, model, loaders, preprocess, options)
        if group.distributed:
            assert ctx.plan is not None
            self._hand_over(
                Handover(
                    self.project_id,
                    claimed.run_id,
                    resolved,
                    layout,
                    options,
                    seed,
                    dataset_url,
                    ctx.plan,
                    group.place.node_rank,
                    ctx.checkpoints is not None,
                    resumed["fitter"] if resumed else None,
                )
            )
        fitter = Fitter(model, loaders, preprocess, options, group)
        if resumed:
            stages.resume(ctx, fitter, resumed)
        history = stages.fit(ctx, fitter, config, seed, self.progress)
        training_seconds = time.perf_counter() - started

        report, test_loss = stages.evaluate_on_test(ctx, fitter, layout)
        run_metrics = finish.metrics(fitter, history, report, test_loss, training_seconds, seed)
        metadata = finish.model_metadata(ctx, resolved, layout, run_metrics, device, claimed.attempt)
        metadata["lr_find"] = lr_found
        pictures = finish.draw(ctx, history, fitter.progress.best_epoch, report, layout, project.name)
        url, sidecar_url, beside_urls = finish.publish(
            ctx, project, model, metadata, pictures, self.upload_retry_delay_s
        )
        metadata.update(beside_urls)
        finish.verify(ctx, url, model, resolved, layout, loaders["test"], preprocess)
        return finish.record(ctx, project, url, sidecar_url, metadata)

    # -- failure paths ----------------------------------------------------------------------------------
    def _interrupted(self, exc: Interrupted) -> RunResult:
        """Stopped (SIGTERM, or the lease lost): while the project is still this run's and `training`, keep
        the checkpoint for the retry of the same run (exit EXIT_RETRY); otherwise the run was cancelled or
        reaped, and everything it wrote goes."""
        assert self.ctx is not None and self.heartbeat is not None
        self.heartbeat.stop()
        current = self.records.get_project(self.project_id)
        status = current.status if current else None
        ours = current is not None and run_id_of(current) == self.ctx.run_id
        resumable = ours and status == ProjectStatus.TRAINING.value
        checkpoints = self.ctx.checkpoints
        keep = checkpoint_prefix(self.project_id, self.ctx.run_id) if resumable else None
        self.ctx.owner.discard_all(
            except_prefix=self.settings.model_store_root + "/" + keep if keep else None
        )
        if resumable:
            # The lease passes to the retry: it begins with the next trainer's first beat, so the time
            # a retry waits for its slot or its pod is not mistaken for a dead trainer.
            update_run(self.records, self.project_id, self.ctx.run_id, heartbeat_at=None)
        checkpoint = None
        if resumable and checkpoints is not None and checkpoints.saved:
            checkpoint = {"url": checkpoints.url, "saved_at": utcnow().isoformat()}
        self.log.warning(
            f"Trainer stopped during step {self.step}: "
            + (
                "checkpoint saved, the next attempt resumes from it"
                if checkpoint
                else "no checkpoint to resume"
                if resumable
                else "the run had ended meanwhile (cancelled or reaped); its files were removed"
            ),
            step=self.step,
            checkpoint=checkpoint,
            exit_code=exc.exit_code,
        )
        return RunResult(self.project_id, False, status, exc.exit_code, error={"message": str(exc)})

    def _publish_failure_log(self, error: dict[str, Any]) -> dict[str, str]:
        """The whole log of the failed run, uploaded under the project's failure prefix (after the rollback,
        so that it says what was removed); `{"log_url": ...}` for the error, or {} when it could not be."""
        if self.ctx is None or self.run_log is None:
            return {}
        logger.error("Training failed at step %s: %s", self.step, error["message"])
        logger.debug("The failure's traceback:\n%s", error["traceback"])
        url = failure_log_url(self.storage, self.project_id, self.ctx.run_id, self.attempt)
        return {"log_url": url} if self.run_log.publish_failure(self.ctx.owner, url) else {}

    def _fail(self, exc: BaseException) -> RunResult:
        exit_code = exc.exit_code if isinstance(exc, TrainingAgentError) else EXIT_FAILED
        error = {**error_details(exc, self.step), "exit_code": exit_code}
        if self.ctx is not None:
            self.ctx.owner.discard_all()
            error.update(self._publish_failure_log(error))
        status = None
        moved = None
        why = "after its run had ended"
        try:
            moved = self.records.transition_project(
                self.project_id,
                from_status=ProjectStatus.TRAINING.value,
                to_status=ProjectStatus.FAILED.value,
                metadata_patch={"error": error},
            )
            current = moved or self.records.get_project(self.project_id)
            status = current.status if current else None
        except Exception:
            logger.exception("Could not mark project %s as failed", self.project_id)
            why = "and could not mark the project failed"
        if moved is not None:
            log_failed(self.log, self.project_name, error, step=self.step)
        else:
            # Ended meanwhile (a cancel or the reaper wrote the closing row), or the records could not be
            # reached (whoever watches the trainer fails the run once it exits): not a second closing row.
            self.log.warning(f"The trainer failed at step {self.step} {why}: {error['message']}", **error)
        return RunResult(self.project_id, False, status, exit_code, error=error)
