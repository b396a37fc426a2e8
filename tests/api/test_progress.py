"""In-epoch progress through the HTTP status route: a real run (the local executor's trainer process) is
polled over real HTTP while it trains, and its `progress.live` moves within the first epoch, before any
epoch has ended, then goes away when the run is over."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import make_settings, seed_project
from tests.support.datasets import DatasetFactory
from training_agent.api.main import create_app
from training_agent.api.server import background_server
from training_agent.core.records.sqlite import SQLiteRecords

# 100 steps of 2 images per epoch with a small model: an epoch lasts seconds on an idle machine (many
# progress writes at 0.1 s) and well under a minute on a loaded one.
TRAIN_IMAGES = 200
BATCH = 2
MODEL = "shufflenet_v2_x0_5"


def test_progress_moves_within_the_first_epoch(tmp_path: Path, datasets: DatasetFactory) -> None:
    settings = make_settings(tmp_path, progress_every_seconds=0.1, log_every_steps=50)
    records = SQLiteRecords(settings.resolved_database_path)
    dataset = datasets.shapes(per_class=(TRAIN_IMAGES // 2, 4, 4), size=16)
    project = seed_project(
        records, str(dataset), metadata={"epochs": 2, "batch_size": BATCH, "preferred_model": MODEL}
    )
    samples: list[dict[str, Any]] = []  # each poll's `progress` while the run trained
    with (
        background_server(create_app(settings, records=records)) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        started = client.post("/agents/training/start", json={"project_id": str(project.id)})
        assert started.status_code == 200, started.text
        status_url = started.json()["status_url"]
        deadline = time.monotonic() + 240
        while True:
            assert time.monotonic() < deadline, "the run did not end within 240 s"
            body = client.get(status_url, params={"limit": 0}).json()
            if body["status"] != "training":
                break
            samples.append(body["progress"])
            time.sleep(0.05)
        final = client.get(status_url, params={"limit": 0}).json()

    assert final["status"] == "pending_evaluation", final["error"]
    assert final["progress"]["epoch"] == 2 and final["progress"]["live"] is None  # the run is over

    # Before the first epoch's record (progress.epoch still 0), the in-epoch step advanced.
    first_epoch = [s["live"] for s in samples if s["epoch"] == 0 and s["live"] and s["live"]["epoch"] == 1]
    steps = [live["step"] for live in first_epoch]
    assert len(set(steps)) >= 2, f"the step did not move within the first epoch: {steps}"
    assert steps == sorted(steps)
    mid = next(live for live in first_epoch if 0 < live["step"] < live["steps"])
    assert (mid["epochs"], mid["steps"]) == (2, TRAIN_IMAGES // BATCH)
    assert mid["images"] == mid["step"] * BATCH
    assert mid["images_per_second"] > 0 and mid["eta_seconds"] > 0 and mid["updated_at"]
    # The run's ETA counts the second epoch too: more than this epoch's remaining steps take.
    step_s = BATCH / mid["images_per_second"]
    assert mid["eta_seconds"] > (mid["steps"] - mid["step"]) * step_s
