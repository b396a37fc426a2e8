"""What the real-data benchmarks (time_to_accuracy.py, model_matrix.py) share: the real `training-agent
train` command in a fresh process on a project of its own, `--option key=value` parsing, mean and spread."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs as project metadata; a value is read as JSON where it parses (32, false, 0.01, null),
    else kept as a string (`lr_schedule=cosine`)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--option wants key=value, got {pair!r}")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    return options


@dataclass
class TrainerRun:
    """One `training-agent train` process: `wall_seconds` from its start to its exit (Python and torch
    imports, the fetch, the decode cache, the epochs, the test pass, upload and verify: all of it)."""

    metadata: dict[str, Any]
    wall_seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)  # the model's metadata, as `train --json` prints it
    data_seconds: float | None = None  # the prepare_data step ("Data ready in X s")
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> dict[str, Any]:
        """What a benchmark row reports: the wall time, the error or what the run chose and reached."""
        row: dict[str, Any] = {"wall_seconds": self.wall_seconds, "error": self.error}
        if self.error:
            return row
        m = self.metrics
        keys = ("image_size", "batch_size", "optimizer", "learning_rate", "precision", "epochs_run")
        row |= {key: m.get(key) for key in keys}
        row |= {key: m[key] for key in ("best_epoch", "test_accuracy", "test_macro_f1", "training_seconds")}
        row["epoch_seconds"] = [round(r["seconds"], 2) for r in m["history"]]
        row["data_seconds"] = self.data_seconds
        return row


def run_trainer(
    zip_path: Path,
    work: Path,
    metadata: dict[str, Any],
    *,
    timeout: float | None = None,
    processes: int = 1,
    env: dict[str, str] | None = None,
) -> TrainerRun:
    """`training-agent train --project-id …` in a child process, on a project made for it in a fresh embedded
    SQLite store with a local-folder bucket (both in a folder under `work`, removed afterwards); with
    `processes` > 1, under torchrun as the local executor starts it. A failure, a crash or a timeout is
    returned as the run's `error`, never raised."""
    # Imported here: a benchmark's own child processes import this module and must not pay for these.
    from training_agent.core.records import open_records
    from training_agent.core.settings import Settings
    from training_agent.core.trainer_process import trainer_command

    with tempfile.TemporaryDirectory(dir=work, prefix="trainer-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", work_dir=Path(tmp) / "work")
        records = open_records(settings)
        project = records.create_project("bench", status="pending_training", metadata=metadata)
        records.create_dataset(project.id, gcs_url=str(zip_path))
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT / "src"),
            "TRAINING_AGENT_DATA_DIR": str(settings.data_dir),
            "TRAINING_AGENT_WORK_DIR": str(settings.work_dir),
            "LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        command = [*trainer_command(project.id, claimed=False, processes=processes), "--json"]
        started = time.perf_counter()
        try:
            child = subprocess.run(
                command, env=env, capture_output=True, text=True, check=False, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            seconds = time.perf_counter() - started
            return TrainerRun(metadata, seconds, error=f"timed out after {timeout:.0f} s")
        run = TrainerRun(metadata, time.perf_counter() - started)
        try:
            result = json.loads(child.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            result = {}
        if child.returncode != 0 or not result.get("succeeded"):
            message = (result.get("error") or {}).get("message") or child.stderr.strip()[-2000:]
            run.error = f"exit {child.returncode}: {message}"
            return run
        run.metrics = result["metrics"]
        logs = records.recent_logs(project.id, limit=500)
        data_log = next((log for log in logs if log.message.startswith("Data ready")), None)
        run.data_seconds = float(data_log.metadata["seconds"]) if data_log else None
        return run


def mean_spread(values: list[float]) -> dict[str, float] | None:
    """Mean, min, max and spread (max - min) over seeds; None when there is no value."""
    if not values:
        return None
    return {
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
        "spread": max(values) - min(values),
        "n": len(values),
    }


def points(value: float | None) -> str:
    """An accuracy in [0, 1] as percentage points, for tables."""
    return "—" if value is None else f"{100 * value:.1f}"
