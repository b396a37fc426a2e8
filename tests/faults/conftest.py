"""The fault-injection suite's world: a project named "cats/dogs", a bystander project "cats dogs" (the
same safe name) whose model already sits at `models/cats_dogs_model.pth`, and the checks every outcome must
pass. Trainers run as real `training-agent train` processes with tests/faults/hooks on their PYTHONPATH, so
they send themselves SIGKILL or SIGTERM at the step a test names."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import make_settings, seed_project
from training_agent.core.records import Project, RecordsStore, open_records
from training_agent.core.settings import Settings
from training_agent.core.storage import ObjectStorage, owner_metadata
from training_agent.synthetic import write_shapes_zip

HOOKS = Path(__file__).parent / "hooks"
BYSTANDER_KEY = "models/cats_dogs_model.pth"
METADATA = {"epochs": 2, "image_size": 16, "batch_size": 8, "seed": 1}
LEASE_S = 3.0  # short enough to wait out, long enough that a busy machine never misses one by accident


@dataclass
class World:
    tmp: Path
    settings: Settings
    records: RecordsStore
    storage: ObjectStorage
    dataset: str
    bystander: Project
    bystander_bytes: bytes

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "TRAINING_AGENT_DATA_DIR": str(self.settings.data_dir),
            "TRAINING_AGENT_WORK_DIR": str(self.settings.work_dir),
            "TRAINING_AGENT_NUM_WORKERS": "0",
            "TRAINING_AGENT_DEVICE": "cpu",
            # On CPUs with AVX512-BF16 the first bf16 epoch pays ~8 s of oneDNN warm-up; fp32 does not.
            "TRAINING_AGENT_PRECISION": "fp32",
            "TRAINING_AGENT_RUN_LEASE_SECONDS": str(LEASE_S),
            **extra,
        }

    def project(self) -> Project:
        return seed_project(self.records, self.dataset, metadata=METADATA, name="cats/dogs")

    def train(
        self, project: Project, *, claimed: bool, fault: str = "", sig: str = "KILL", **extra_env: str
    ) -> int:
        """Run the trainer to its end (or its fault), with `extra_env` on top of the World's settings;
        returns its exit status (negative: killed)."""
        env = self.env(**extra_env)
        if fault:
            env |= {"PYTHONPATH": os.pathsep.join([str(HOOKS), env.get("PYTHONPATH", "")]), "FAULT_AT": fault}
            env["FAULT_SIGNAL"] = sig
        command = [sys.executable, "-m", "training_agent", "train", "--project-id", str(project.id)]
        proc = subprocess.run(
            [*command, "--claimed"] if claimed else command,
            env=env,
            cwd=self.tmp,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc.returncode

    def assert_settled(self, project: Project, *, allow_training: bool = False) -> str:
        """The invariants after any fault: returns the project's status."""
        current = self.records.get_project(project.id)
        assert current is not None
        status = current.status
        allowed = {"pending_evaluation", "failed"} | ({"training"} if allow_training else set())
        assert status in allowed, (status, current.metadata.get("error"))
        models = self.records.list_models(project.id)
        if status == "pending_evaluation":
            assert len(models) == 1
            self.assert_loadable(models[0].gcs_url)
            assert not models[0].gcs_url.endswith(BYSTANDER_KEY)
        elif status == "failed":
            assert current.metadata["error"]["message"]
            assert len(models) <= 1  # a model row whose run was reaped after recording it stays valid
            for row in models:
                self.assert_loadable(row.gcs_url)
        # The bystander's model and row are untouched, whatever happened.
        url = self.storage.model_url(BYSTANDER_KEY)
        self.storage.download(url, self.tmp / "bystander.check")
        assert (self.tmp / "bystander.check").read_bytes() == self.bystander_bytes
        [row] = self.records.list_models(self.bystander.id)
        assert row.gcs_url == url
        if status != "training":
            self.assert_nothing_left()
        return status

    def assert_loadable(self, url: str) -> None:
        self.storage.download(url, self.tmp / "model.check")
        state = torch.load(self.tmp / "model.check", map_location="cpu", weights_only=True)
        assert "fc.weight" in state

    def assert_nothing_left(self) -> None:
        work = self.settings.work_dir
        assert not work.exists() or list(work.iterdir()) == [], list(work.iterdir())
        left = everything_under(self.settings.resolved_local_bucket_dir / "checkpoints")
        assert left == [], left


def everything_under(root: Path) -> list[Path]:
    """Files and folders under `root` (none if it is missing). Unlike Path.rglob, os.walk skips a folder
    that a concurrent clean-up removes while it looks, instead of raising FileNotFoundError."""
    return sorted(Path(parent, name) for parent, folders, files in os.walk(root) for name in folders + files)


@pytest.fixture
def world(tmp_path: Path) -> World:
    settings = make_settings(tmp_path, run_lease_seconds=LEASE_S)
    records = open_records(settings)
    storage = ObjectStorage(settings)
    dataset = write_shapes_zip(tmp_path / "shapes.zip", classes=2, per_class=(12, 4, 4), image_size=16)
    bystander = seed_project(
        records, str(dataset), metadata=METADATA, status="pending_evaluation", name="cats dogs"
    )
    weights = tmp_path / "bystander.pth"
    torch.save({"fc.weight": torch.ones(2, 2)}, weights)
    url = storage.model_url(BYSTANDER_KEY)
    storage.upload(weights, url, metadata=owner_metadata(bystander.id, "0" * 32), if_generation_match=0)
    from training_agent.core.records import NewModel

    records.insert_model(NewModel(project_id=bystander.id, name="cats dogs_model", gcs_url=url, metadata={}))
    return World(tmp_path, settings, records, storage, str(dataset), bystander, weights.read_bytes())


def summary(outcomes: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in outcomes.items())
