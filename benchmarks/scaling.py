"""Data-parallel scaling: images/s of the real trainer with 1, 2, ... processes under torchrun.

Each run is the real `training-agent train --project-id …` command started as the local executor starts it
(`torch.distributed.run --standalone --nproc-per-node N`), on a project in a fresh embedded SQLite store with
a local-folder bucket (benchmarks/common.py). Every process trains the same per-process batch, so N
processes train N times the images per step (the global batch); DDP all-reduces the gradients at every step.

On a CPU every process gets one thread (OMP_NUM_THREADS=1, gloo): the efficiency measures the cost of the
gradient all-reduce and of the ranks waiting for each other, not of threads competing for cores. Keep N at
most the number of cores. On a GPU machine each process takes one GPU (NCCL), the same script measures
1..N GPUs.

The data: scikit-learn's copy of the UCI handwritten digits (1,797 real scanned digits, in the wheel), as
train/val/test folders of PNGs (tests/support/real_sets.py). The images/s of a run is the median of its
epochs' training throughput after the first epoch (the first pays the allocator's and the kernels' warm-up);
efficiency(N) = images/s(N) / (N x images/s(1)), both measured in the same invocation.

    .venv/bin/python benchmarks/scaling.py [--processes 1,2] [--model resnet18] [--image-size 64]
        [--batch 32] [--epochs 4] [--repeats 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.real_sets import write_digits_zip

from benchmarks.common import run_trainer


def steady_images_per_second(history: list[dict[str, Any]]) -> float:
    """The median epoch throughput after the first epoch (the only one when there is one)."""
    rates = [float(row["images_per_s"]) for row in history]
    return statistics.median(rates[1:] or rates)


def measure(zip_path: Path, work: Path, processes: int, args: argparse.Namespace) -> dict[str, Any]:
    metadata = {
        "preferred_model": args.model,
        "pretrained": False,
        "image_size": args.image_size,
        "batch_size": args.batch,
        "epochs": args.epochs,
        "seed": 0,
    }
    env = {"OMP_NUM_THREADS": "1", "TRAINING_AGENT_NUM_WORKERS": "0", "TRAINING_AGENT_DEVICE": args.device}
    rates, accuracies = [], []
    for _ in range(args.repeats):
        run = run_trainer(zip_path, work, metadata, processes=processes, env=env, timeout=args.timeout)
        if run.error:
            return {"processes": processes, "error": run.error}
        rates.append(steady_images_per_second(run.metrics["history"]))
        accuracies.append(run.metrics["test_accuracy"])
    return {
        "processes": processes,
        "world_size": run.metrics["world_size"],
        "global_batch": run.metrics["global_batch_size"],
        "precision": run.metrics["precision"],
        "device": run.metrics["device"],
        "images_per_second": round(statistics.median(rates), 1),
        "test_accuracy": round(statistics.fmean(accuracies), 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2", help="process counts, comma-separated")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32, help="per process")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1, help="runs per process count (median)")
    parser.add_argument("--device", default="cpu", help="cpu, or auto/cuda on a GPU machine")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    counts = [int(n) for n in args.processes.split(",")]
    if args.device == "cpu" and max(counts) > (os.cpu_count() or 1):
        parser.error(f"--processes {max(counts)} is more than this machine's {os.cpu_count()} cores")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        zip_path = write_digits_zip(work / "digits.zip")
        rows = [measure(zip_path, work, n, args) for n in counts]
    base = next((row for row in rows if row.get("processes") == 1 and "error" not in row), None)
    for row in rows:
        if base and "error" not in row:
            speed_up = row["images_per_second"] / base["images_per_second"]
            row["speed_up"] = round(speed_up, 3)
            row["efficiency"] = round(speed_up / row["processes"], 3)
    if args.json:
        print(json.dumps({"model": args.model, "image_size": args.image_size, "rows": rows}))
        return 0
    print(
        f"{args.model} at {args.image_size} px, batch {args.batch} per process, {args.epochs} epochs, "
        f"device {args.device}, one thread per process"
    )
    print("| processes | global batch | images/s | speed-up | efficiency | test accuracy |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['processes']} | — | error: {row['error'][:80]} | | | |")
            continue
        print(
            f"| {row['processes']} | {row['global_batch']} | {row['images_per_second']:.1f} | "
            f"{row.get('speed_up', 0):.2f}x | {100 * row.get('efficiency', 0):.0f} % | "
            f"{100 * row['test_accuracy']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
