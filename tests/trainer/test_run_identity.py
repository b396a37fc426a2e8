"""A run's identity and what it owns, in process: a cancel while the model is read back, and a checkpoint
of an older run of the same project."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import seed_project
from tests.support.datasets import DatasetFactory
from tests.trainer.test_pipeline import assert_nothing_left, bucket_files, run
from training_agent.core.errors import EXIT_RETRY
from training_agent.core.records import RecordsStore
from training_agent.core.settings import Settings
from training_agent.core.storage import ObjectStorage


def test_cancel_during_verify_reads_as_cancelled_and_leaves_nothing(
    settings: Settings, records: RecordsStore, datasets: DatasetFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The executor fails the project as cancelled, then sends SIGTERM, while the trainer reads its model
    back: the outcome is the cancel (not "a corrupt model"), the upload is removed, and no row is written."""
    from training_agent.core.lease import fail_run
    from training_agent.trainer import finish
    from training_agent.trainer.interrupt import StopSignal
    from training_agent.trainer.verify import smoke_check as real_check

    stop = StopSignal()

    def cancelled_meanwhile(*args: Any, **kwargs: Any) -> float:
        fail_run(records, project.id, "Cancelled by request", agent_name="test", error_type="Cancelled")
        stop.request()  # what the SIGTERM handler does; deferred here, so only a flag
        return real_check(*args, **kwargs)

    monkeypatch.setattr(finish, "smoke_check", cancelled_meanwhile)
    project = seed_project(records, str(datasets.shapes()))
    result = run(project.id, settings, records, stop=stop)
    assert not result.succeeded and result.exit_code == EXIT_RETRY
    stored = records.get_project(project.id)
    assert stored is not None and stored.status == "failed"
    assert stored.metadata["error"]["message"] == "Cancelled by request"
    errors = [log.message for log in records.recent_logs(project.id, limit=200) if log.log_level == "error"]
    assert errors == ["Training failed for project Demo project: Cancelled by request"]  # the one closing row
    assert records.list_models(project.id) == []
    assert_nothing_left(settings)


def test_a_new_start_never_resumes_an_older_runs_checkpoint(
    settings: Settings, records: RecordsStore, datasets: DatasetFactory
) -> None:
    """A checkpoint left by a killed run (another run id) is not trained on top of, and a checkpoint of
    this run made from another dataset object is ignored too."""
    from training_agent.core.lease import new_run
    from training_agent.core.storage import owner_metadata
    from training_agent.trainer.checkpoint import checkpoint_key

    project = seed_project(records, str(datasets.shapes()), metadata={"epochs": 2})
    old_run = new_run(project.id, "cli")["run_id"]
    storage = ObjectStorage(settings)
    stale = settings.work_dir.parent / "stale.pt"
    stale.write_bytes(b"not even a checkpoint")
    url = storage.model_url(checkpoint_key(project.id, old_run))
    storage.upload(stale, url, metadata=owner_metadata(project.id, old_run), if_generation_match=0)

    result = run(project.id, settings, records)
    assert result.succeeded, result.error
    messages = [log.message for log in records.recent_logs(project.id, limit=200)]
    assert not any(m.startswith("Resuming from") for m in messages)
    assert result.metrics["attempt"] == 1
    # The old run's checkpoint is swept, since that run is not live; the new run left nothing.
    from training_agent.core.sweep import sweep_ended

    assert sweep_ended(settings, records, storage) == 1
    assert bucket_files(settings, "checkpoints") == []
