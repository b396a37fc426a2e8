"""Data-parallel training under torchrun (gloo on this machine's CPU): real `torchrun` launches of the real
trainer command, never a mocked process group.

- two processes at batch B train like one process at batch 2B (same seed): the ranks' shares of a step are
  the lone process's batch;
- rank 0 alone writes: one claim, one model, one row, the same objects and closing rows as a lone run;
- a two-process run killed with SIGKILL resumes from rank 0's checkpoint with the same world size;
- two torchrun agents on 127.0.0.1 (node ranks 0 and 1) train as two nodes, the second unpacking its own
  copy of the dataset.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from tests.conftest import seed_project
from tests.support.datasets import DatasetFactory
from training_agent.core.errors import EXIT_INVALID_INPUT, EXIT_RETRY, Interrupted
from training_agent.core.records import Project
from training_agent.core.records.sqlite import SQLiteRecords
from training_agent.synthetic import write_shapes_zip
from training_agent.trainer.data import CachedLoader, EpochBatchSampler, Loader
from training_agent.trainer.engine import FitOptions, Fitter
from training_agent.trainer.group import SOLO, Group
from training_agent.trainer.launch import exit_code_of
from training_agent.trainer.placement import Place, place
from training_agent.trainer.preprocess import Augmentation, Preprocess

CPU = torch.device("cpu")

# torchrun as the local executor and the Job's pods start it: with the trainer's exit code as its own.
TORCHRUN = [sys.executable, "-m", "training_agent", "torchrun"]
STARTED: list[subprocess.Popen[str]] = []


# -- where a process is, and what it reads ------------------------------------------------------------------
def test_place_reads_torchrun_and_defaults_to_a_lone_process() -> None:
    assert place({}) == Place()
    two = {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "0"}
    assert place(two) == Place(1, 1, 2, 0, 1)
    nodes = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "GROUP_RANK": "1", "GROUP_WORLD_SIZE": "2"}
    assert place(nodes) == Place(3, 1, 4, 1, 2)
    assert not place(two).leads and place({"RANK": "0", "WORLD_SIZE": "4"}).leads
    # Strays outside torchrun never stop a plain trainer.
    for stray in ({"RANK": "3"}, {"RANK": "x", "WORLD_SIZE": "2"}, {"RANK": "5", "WORLD_SIZE": "2"}):
        assert place(stray) == Place(), stray


@pytest.mark.parametrize("n", [40, 41, 37, 3])
def test_ranks_share_the_lone_process_batches(n: int) -> None:
    """Rank r's batch k is its slice of the lone process's batch k at twice the batch size; every rank
    has as many batches; padding repeats the epoch's start; every image is trained on."""
    lone = EpochBatchSampler(n, 8, shuffle=True, seed=5)
    ranks = [EpochBatchSampler(n, 4, shuffle=True, seed=5, rank=r, world_size=2) for r in (0, 1)]
    for sampler in (lone, *ranks):
        sampler.set_epoch(3)
    lone_batches, shares = list(lone), [list(rank) for rank in ranks]
    assert len(shares[0]) == len(shares[1]) == len(ranks[0])
    seen = {i for share in shares for batch in share for i in batch}
    assert seen == set(range(n))
    if n % 8 == 0:
        for k, batch in enumerate(lone_batches):
            assert sorted(shares[0][k] + shares[1][k]) == sorted(batch)
    assert all(len(batch) != 1 for share in shares for batch in share) or n <= 2


def test_evaluation_shares_cover_each_image_once() -> None:
    shares = [
        [
            i
            for batch in EpochBatchSampler(11, 4, shuffle=False, seed=0, rank=r, world_size=3, pad=False)
            for i in batch
        ]
        for r in range(3)
    ]
    assert sorted(i for share in shares for i in share) == list(range(11))


# -- the training loop on two gloo processes --------------------------------------------------------------
def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, 3, (n,), generator=generator)
    noise = torch.randint(0, 60, (n, 3, 8, 8), generator=generator)
    return (targets.view(-1, 1, 1, 1) * 70 + noise).to(torch.uint8), targets


def _fit(rank: int, world_size: int, batch: int, stop_at: int | None = None) -> dict[str, Any]:
    """A BatchNorm-free model trained by this process's share (no augmentation: nothing random per rank)."""
    group = SOLO
    if world_size > 1:
        group = Group(Place(rank, rank, world_size), dist.group.WORLD)
    loaders: dict[str, Loader] = {}
    for split, n, seed in (("train", 48, 1), ("val", 13, 2), ("test", 13, 3)):
        images, targets = _data(n, seed)
        sampler = EpochBatchSampler(
            n, batch, shuffle=split == "train", seed=4, rank=rank, world_size=world_size, pad=split == "train"
        )
        loaders[split] = CachedLoader(images, targets, sampler, pin=False)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)
    )
    preprocess = Preprocess(
        CPU, augmentation=Augmentation(enabled=False), seed=0, channels_last=False, num_classes=3
    )
    options = FitOptions(
        epochs=3, learning_rate=0.02, lr_schedule="cosine", lr_warmup_epochs=0.5, log_every=100
    )
    fitter = Fitter(model, loaders, preprocess, options, group)
    steps = iter(range(10**6))
    saved: list[dict[str, Any] | None] = []
    try:
        # Only rank 1 asks for the stop: every rank must stop at that same step.
        fitter.fit(
            lambda r: None,
            lambda: saved.append(fitter.state_dict()),
            lambda: rank == 1 and next(steps) == stop_at,
        )
    except Interrupted:
        return {"stopped_at": fitter.progress.batches_done, "saved": saved[-1]}
    return {
        "weights": {k: v.clone() for k, v in model.state_dict().items()},
        "val": [h["val_accuracy"] for h in fitter.progress.history],
        "train_loss": [h["train_loss"] for h in fitter.progress.history],
        "test": fitter.evaluate("test").targets.numel(),
    }


def _worker(rank: int, world_size: int, init_file: str, out: str, stop_at: int | None) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.save(_fit(rank, world_size, 4, stop_at), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def _two_processes(tmp_path: Path, stop_at: int | None = None) -> list[dict[str, Any]]:
    out = str(tmp_path / "result")
    spawn = mp.spawn  # type: ignore[attr-defined]
    spawn(_worker, args=(2, str(tmp_path / "init"), out, stop_at), nprocs=2, join=True)  # type: ignore[no-untyped-call]
    return [torch.load(f"{out}.{rank}", weights_only=False) for rank in (0, 1)]


@pytest.mark.slow
def test_ddp_steps_equal_the_lone_process_at_the_global_batch(tmp_path: Path) -> None:
    lone = _fit(0, 1, 8)
    ranks = _two_processes(tmp_path)
    for rank in ranks:  # every rank ends with the lone process's weights and metrics
        for name, value in lone["weights"].items():
            torch.testing.assert_close(rank["weights"][name], value, rtol=1e-4, atol=1e-5)
        assert rank["val"] == lone["val"] and rank["test"] == 13  # the whole split, each image once
        assert rank["train_loss"] == pytest.approx(lone["train_loss"], rel=1e-4)


@pytest.mark.slow
def test_a_stop_on_one_rank_stops_every_rank_at_the_same_step(tmp_path: Path) -> None:
    # The 9th stop check: 6 steps and the end of epoch 1, then epoch 2's step 2 of 6.
    ranks = _two_processes(tmp_path, stop_at=8)
    assert ranks[0]["stopped_at"] == ranks[1]["stopped_at"] == 2
    saved = ranks[0]["saved"]
    assert ranks[1]["saved"] is None  # rank 0 alone holds the checkpoint's state...
    assert len(saved["ranks"]) == 2  # ...with every rank's RNG states
    assert saved["progress"]["images"] == 2 * 2 * 4  # the epoch so far, summed over the ranks


# -- real torchrun launches ---------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def no_stray_trainers() -> Iterator[None]:
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "TRAINING_AGENT_DATA_DIR": str(tmp_path / "data"),
        "TRAINING_AGENT_WORK_DIR": str(tmp_path / "work"),
        "TRAINING_AGENT_NUM_WORKERS": "0",
        "TRAINING_AGENT_DEVICE": "cpu",
        "OMP_NUM_THREADS": "1",
        **extra,
    }


def launch(
    tmp_path: Path, project: Project, launcher: list[str], *, claimed: bool = False, **env: str
) -> subprocess.Popen[str]:
    command = [
        *launcher,
        "-m",
        "training_agent",
        "train",
        "--project-id",
        str(project.id),
        "--no-progress-bar",
    ]
    proc = subprocess.Popen(
        [*command, "--claimed"] if claimed else command,
        env=environment(tmp_path, **env),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the group is killed as one (torchrun and its workers)
    )
    STARTED.append(proc)
    return proc


def finish(proc: subprocess.Popen[str], timeout: float = 600) -> str:
    _out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-4000:]
    return err


def shapes_project(tmp_path: Path, records: SQLiteRecords, **metadata: Any) -> Project:
    dataset = write_shapes_zip(tmp_path / "shapes.zip", classes=3, per_class=(48, 12, 12), image_size=32)
    options = {"epochs": 3, "image_size": 32, "seed": 11, "augment": False, **metadata}
    return seed_project(records, str(dataset), metadata=options)


def bucket_objects(tmp_path: Path) -> list[str]:
    bucket = tmp_path / "data" / "bucket"
    return sorted(
        str(p.relative_to(bucket)) for p in bucket.rglob("*") if p.is_file() and "datasets" not in p.parts
    )


def closing_rows(records: SQLiteRecords, project: Project) -> list[str]:
    return [
        log.message
        for log in records.recent_logs(project.id, limit=500)
        if log.message.startswith(("Training complete", "Training failed"))
    ]


def standalone(n: int) -> list[str]:
    return [*TORCHRUN, "--standalone", "--nproc-per-node", str(n)]


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_global_batch(tmp_path: Path) -> None:
    results: dict[int, dict[str, Any]] = {}
    rows_of_one_process = 0
    for processes, batch in ((1, 16), (2, 8)):
        folder = tmp_path / f"p{processes}"
        folder.mkdir()
        records = SQLiteRecords(folder / "data" / "records.db")
        project = shapes_project(folder, records, batch_size=batch)
        finish(launch(folder, project, standalone(processes)))
        [model] = records.list_models(project.id)
        results[processes] = model.metadata
        assert records.get_project(project.id).status == "pending_evaluation"  # type: ignore[union-attr]
        assert len(closing_rows(records, project)) == 1
        if processes == 2:
            # Rank 0 alone wrote: one model and its pictures and sidecar, as a lone run writes.
            assert [Path(p).suffix for p in bucket_objects(folder)] == [
                Path(p).suffix for p in bucket_objects(tmp_path / "p1")
            ]
            assert len(records.list_models(project.id)) == 1
            # ...and the same agent_logs rows, each once (one "Dataset downloaded", one closing row).
            levels = [log.log_level for log in records.recent_logs(project.id, limit=500)]
            assert len(levels) == rows_of_one_process and "error" not in levels
        else:
            rows_of_one_process = len(records.recent_logs(project.id, limit=500))
    one, two = results[1], results[2]
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert one["global_batch_size"] == two["global_batch_size"] == 16
    assert two["nodes"] == 1
    # Same images per step and seed: the same training within a small tolerance (BatchNorm normalises
    # each rank's half of the batch, so not bit for bit: the BatchNorm-free test below is exact).
    assert one["history"][0]["train_loss"] == pytest.approx(two["history"][0]["train_loss"], rel=0.1)
    assert abs(one["test_accuracy"] - two["test_accuracy"]) <= 0.1


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_stopped_two_process_run_resumes_from_its_checkpoint(tmp_path: Path, how: str) -> None:
    """SIGTERM to the launcher (a preemption): torchrun passes it to both ranks, rank 0 checkpoints, and the
    launcher exits 75 like one trainer (a retry the Job does not count), and the retry resumes. SIGKILL of
    the launcher alone: the ranks die with it (no one trains on) and the last epoch's checkpoint is there;
    a retry's resume from it is the SIGTERM case's and test_resume.py's (one process, after SIGKILL)."""
    records = SQLiteRecords(tmp_path / "data" / "records.db")
    project = shapes_project(tmp_path, records, epochs=3, batch_size=16)
    first = launch(tmp_path, project, standalone(2))
    deadline = time.monotonic() + 300
    while not any(log.message.startswith("Epoch 1/3") for log in records.recent_logs(project.id, limit=200)):
        assert first.poll() is None, first.stderr.read() if first.stderr else ""
        assert time.monotonic() < deadline, "no first epoch"
        time.sleep(0.1)
    first.send_signal(getattr(signal, how))
    _out, err = first.communicate(timeout=120)
    assert first.returncode == (EXIT_RETRY if how == "SIGTERM" else -signal.SIGKILL), err[-3000:]
    assert records.get_project(project.id).status == "training"  # type: ignore[union-attr]
    time.sleep(1)  # the killed launcher's ranks are gone too: nothing writes after it
    assert not [log for log in records.recent_logs(project.id, limit=500) if "complete" in log.message]
    checkpoints = tmp_path / "data" / "bucket" / "checkpoints"
    assert list(checkpoints.glob("*/*/checkpoint.pt"))
    if how == "SIGKILL":
        return

    finish(launch(tmp_path, project, standalone(2), claimed=True))  # what the Job's next pod runs
    [model] = records.list_models(project.id)
    [resumed] = [log for log in records.recent_logs(project.id) if log.message.startswith("Resuming from")]
    assert resumed.metadata["epochs_done"] >= 1  # the epoch log row follows its checkpoint
    assert [h["epoch"] for h in model.metadata["history"]] == [1, 2, 3]
    assert model.metadata["world_size"] == 2 and model.metadata["attempt"] == 2
    assert not checkpoints.exists()
    assert len(closing_rows(records, project)) == 1


@pytest.mark.slow
def test_the_launcher_exits_with_rank_0s_code(tmp_path: Path, datasets: DatasetFactory) -> None:
    """Invalid input fails the run on rank 0 (exit 3, which fails a Job at once); the other rank leaves
    cleanly when rank 0 tells it the run ended before training."""
    records = SQLiteRecords(tmp_path / "data" / "records.db")
    project = seed_project(records, str(datasets.not_a_zip()))
    proc = launch(tmp_path, project, standalone(2))
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_INVALID_INPUT, err[-3000:]
    assert "Rank 1: rank 0 ended the run before training" in err
    assert records.get_project(project.id).status == "failed"  # type: ignore[union-attr]


def test_exit_codes_of_failed_ranks() -> None:
    failure = SimpleNamespace
    assert exit_code_of({0: failure(exitcode=75), 1: failure(exitcode=1)}) == 75  # rank 0 owns the outcome
    assert exit_code_of({1: failure(exitcode=3)}) == 3
    assert exit_code_of({0: failure(exitcode=-9)}) == 137  # killed by SIGKILL, as a shell says it
    assert exit_code_of({}) == 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_two_nodes_on_one_machine(tmp_path: Path) -> None:
    """Two torchrun agents on 127.0.0.1 with node ranks 0 and 1, as the Indexed Job's two pods run them."""
    records = SQLiteRecords(tmp_path / "data" / "records.db")
    project = shapes_project(tmp_path, records, epochs=2, batch_size=16)
    rendezvous = ["--master-addr=127.0.0.1", f"--master-port={free_port()}"]
    agents = [
        launch(
            tmp_path,
            project,
            [*TORCHRUN, "--nnodes=2", "--nproc-per-node=1", f"--node-rank={rank}", *rendezvous],
        )
        for rank in (0, 1)
    ]
    logs = [finish(agent) for agent in agents]
    [model] = records.list_models(project.id)
    assert (model.metadata["world_size"], model.metadata["nodes"]) == (2, 2)
    assert "trains 72 of 144 training images" in logs[1]  # the second node's rank trained its half
    assert records.get_project(project.id).status == "pending_evaluation"  # type: ignore[union-attr]
    assert not list((tmp_path / "work").iterdir())  # both nodes' folders removed
