"""Time to accuracy on real images: the seed document's training loop against the trainer with `recipe: auto`.

The data: scikit-learn's copy of the UCI handwritten digits (1,797 scanned 8x8 greyscale digits, shipped in
the scikit-learn wheel), written once as train/val/test folders of PNGs, 70/15/15 per class
(tests/support/real_sets.py); both sides train from scratch on the same split and are scored on the same
266 test images.

- The seed loop: step 4 of ../shared/seeds/001_1e8abe4859d47472.txt as benchmarks/trainer_vs_seed.py
  reproduces it — ImageFolder over the unzipped folders, Resize to 224x224 (`--image-size-seed`), ToTensor,
  batch 32, shuffle, no workers, Adam 0.001, cross-entropy, resnet18 with a new head, fp32 — in a fresh
  process, seeded (torch.manual_seed before the model, a seeded DataLoader generator). After every epoch it
  scores the test split with the clock paused (the seed has no such pass; it is not counted). A point of its
  curve is (seconds from the process's start to the end of epoch e, test accuracy after epoch e): Python and
  torch imports, the dataset scan and the model build count. Its target is its best test accuracy; its time
  to target is that of the first epoch reaching it.
- The trainer: the real `training-agent train --project-id …` command in a fresh process, on a project in a
  fresh embedded SQLite store with a local-folder bucket, metadata {"recipe": "auto", "pretrained": false,
  "preferred_model": "resnet18", "seed": s, "epochs": E} (+ `--option key=value`). It reports one test
  accuracy, at the end (of its best-val epoch), so its curve is made of whole runs at rising epoch ceilings
  (`--trainer-epochs 1,2,3,5,8`): a point is (the run's wall seconds, process start to exit, with the decode
  cache, validation, the test pass, upload and verify; its test accuracy). Its time to target is the wall time
  of the cheapest run reaching the seed's target of the same seed.

Both sides run for each of `--seeds` seeds (0, 1, …); reported per side: the target, the time to target, the
best accuracy reached within the seed loop's wall time (the seed's end of last epoch), the final accuracy of
the largest budget — each as mean and min-max or spread (max - min) over the seeds — and the ratios.

    .venv/bin/python benchmarks/time_to_accuracy.py [--seeds 5] [--seed-epochs 5] [--trainer-epochs 1,2,3,5,8]
        [--model resnet18] [--image-size-seed 224] [--option key=value ...] [--json]
        [--skip-seed --seed-json PREVIOUS.json] [--first-seed K] [--merge A.json B.json ...]

The seed loop at 224 px is the slow part on a CPU (minutes per epoch on 2 cores): `--json > run.json` keeps a
run, and `--skip-seed --seed-json run.json` reuses its seed side while the trainer is measured again.
`--first-seed K` starts at seed K, so that the seeds can run as several invocations side by side (one core
each), and `--merge a.json b.json …` reports their `--json` outputs as one run.

Goals (the issue): the trainer reaches the seed's accuracy in at most 1/5 of the seed's time, ends at least 1
point higher in the same wall time, and its accuracy spreads by at most 1 point over 5 seeds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn, optim
from torchvision import datasets, models, transforms

from benchmarks.common import mean_spread, parse_options, points, run_trainer

SPEEDUP_GOAL = 5.0
GAIN_GOAL = 0.01  # one point of accuracy
SPREAD_GOAL = 0.01
TOLERANCE = 1e-6  # accuracies are rounded to 6 places in the model's metadata


def accuracy_on(model: nn.Module, loader: torch.utils.data.DataLoader[Any], device: torch.device) -> float:
    correct = total = 0
    model.eval()
    with torch.no_grad():
        for imgs, labels in loader:
            correct += int((model(imgs.to(device)).argmax(1).cpu() == labels).sum())
            total += len(labels)
    return round(correct / total, 6)


def seed_curve(args: argparse.Namespace) -> dict[str, Any]:
    """The seed loop (trainer_vs_seed.seed_loop), seeded, with a test pass after every epoch off the clock.
    Runs in the child process, which imports what the seed's script would and little more."""
    data_dir, image_size, seed = args.data_dir, args.image_size_seed, args.seed
    transform = transforms.Compose([transforms.Resize((image_size, image_size)), transforms.ToTensor()])
    train_ds = datasets.ImageFolder(root=f"{data_dir}/train", transform=transform)
    generator = torch.Generator().manual_seed(seed)
    train_loader = torch.utils.data.DataLoader(
        train_ds, batch_size=args.batch_size, shuffle=True, generator=generator
    )
    test_ds = datasets.ImageFolder(root=f"{data_dir}/test", transform=transform)
    test_loader = torch.utils.data.DataLoader(test_ds, batch_size=args.batch_size)

    torch.manual_seed(seed)
    model = models.resnet18(weights=None)
    model.fc = nn.Linear(model.fc.in_features, len(train_ds.classes))
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=args.learning_rate)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)  # as trainer_vs_seed: on a GPU the baseline gets the GPU too

    loop_started_at = time.time()  # wall clock: the parent compares it with the process's start
    train_seconds, eval_seconds, accuracies = [], [], []
    for _epoch in range(args.seed_epochs):
        started = time.perf_counter()
        model.train()
        for cpu_imgs, cpu_labels in train_loader:
            imgs, labels = cpu_imgs.to(device), cpu_labels.to(device)
            optimizer.zero_grad()
            criterion(model(imgs), labels).backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        accuracies.append(accuracy_on(model, test_loader, device))
        eval_seconds.append(time.perf_counter() - started)
    return {
        "loop_started_at": loop_started_at,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "test_accuracy": accuracies,
        "train_images": len(train_ds),
        "device": device.type,
    }


def seed_side(data_dir: Path, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """One seed of the seed loop in a fresh process (this script with --side seed), as a curve."""
    from benchmarks.trainer_vs_seed import BATCH_SIZE, LEARNING_RATE

    command = [sys.executable, __file__, "--side", "seed", "--data-dir", str(data_dir), "--seed", str(seed)]
    command += ["--seed-epochs", str(args.seed_epochs), "--image-size-seed", str(args.image_size_seed)]
    command += ["--batch-size", str(BATCH_SIZE), "--learning-rate", str(LEARNING_RATE)]
    process_started_at = time.time()
    child = subprocess.run(command, capture_output=True, text=True, check=False)
    process_seconds = time.time() - process_started_at
    if child.returncode != 0:
        raise SystemExit(f"the seed loop failed (exit {child.returncode}):\n{child.stderr}")
    loop = json.loads(child.stdout)
    startup = loop["loop_started_at"] - process_started_at
    curve: list[dict[str, Any]] = []
    elapsed = startup
    for seconds, accuracy in zip(loop["train_seconds"], loop["test_accuracy"], strict=True):
        elapsed += seconds
        curve.append({"epoch": len(curve) + 1, "wall_seconds": elapsed, "test_accuracy": accuracy})
    target = max(p["test_accuracy"] for p in curve)
    return {
        "seed": seed,
        "curve": curve,
        "target": target,
        "time_to_target": next(p["wall_seconds"] for p in curve if p["test_accuracy"] >= target),
        "budget_seconds": curve[-1]["wall_seconds"],  # the seed's whole run, its test passes left out
        "final_accuracy": curve[-1]["test_accuracy"],
        "startup_seconds": startup,  # process start to the first step: imports, dataset scan, model
        "loop_seconds": sum(loop["train_seconds"]),
        "eval_seconds": sum(loop["eval_seconds"]),
        "process_seconds": process_seconds,  # with the test passes
        "device": loop["device"],
    }


def trainer_side(zip_path: Path, work: Path, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """One seed of the trainer: a whole run per epoch ceiling, each in a fresh process."""
    curve = []
    for ceiling in args.trainer_epochs:
        metadata = {"recipe": "auto", "pretrained": False, "preferred_model": args.model}
        metadata |= {"seed": seed, "epochs": ceiling, **args.option}
        run = run_trainer(zip_path, work, metadata)
        if run.error:
            raise SystemExit(f"the trainer failed (seed {seed}, epochs {ceiling}): {run.error}")
        curve.append({"epochs": ceiling, **run.summary()})
        print(
            f"  trainer seed {seed} epochs {ceiling}: {run.wall_seconds:.1f} s, "
            f"test accuracy {points(curve[-1]['test_accuracy'])}",
            file=sys.stderr,
        )
    return {"seed": seed, "curve": curve, "final_accuracy": curve[-1]["test_accuracy"]}


def compare(seed_run: dict[str, Any], trainer_run: dict[str, Any]) -> dict[str, Any]:
    """One seed: the trainer's time to the seed's target, and its best accuracy within the seed's time."""
    target, budget = seed_run["target"], seed_run["budget_seconds"]
    reached = [p["wall_seconds"] for p in trainer_run["curve"] if p["test_accuracy"] >= target - TOLERANCE]
    within = [p["test_accuracy"] for p in trainer_run["curve"] if p["wall_seconds"] <= budget]
    trainer_time = min(reached) if reached else None
    trainer_best = max(within) if within else None
    return {
        "seed": seed_run["seed"],
        "target": target,
        "seed_time_to_target": seed_run["time_to_target"],
        "trainer_time_to_target": trainer_time,
        "speedup": seed_run["time_to_target"] / trainer_time if trainer_time else None,
        "seed_budget_seconds": budget,
        "trainer_best_within_budget": trainer_best,
        "gain": trainer_best - target if trainer_best is not None else None,
    }


def summarise(seed_runs: list[dict[str, Any]], trainer_runs: list[dict[str, Any]]) -> dict[str, Any]:
    pairs = [compare(s, t) for s, t in zip(seed_runs, trainer_runs, strict=True)]

    def stats(key: str, rows: list[dict[str, Any]]) -> dict[str, float] | None:
        values = [row[key] for row in rows]
        return None if None in values else mean_spread(values)

    last = [t["curve"][-1] for t in trainer_runs]
    summary: dict[str, Any] = {
        "per_seed": pairs,
        "target": stats("target", pairs),
        "seed_time_to_target": stats("seed_time_to_target", pairs),
        "trainer_time_to_target": stats("trainer_time_to_target", pairs),
        "speedup": stats("speedup", pairs),
        "seed_budget_seconds": stats("seed_budget_seconds", pairs),
        "trainer_best_within_budget": stats("trainer_best_within_budget", pairs),
        "gain": stats("gain", pairs),
        "seed_final_accuracy": stats("final_accuracy", seed_runs),
        "trainer_final_accuracy": stats("final_accuracy", trainer_runs),
        "seed_process_seconds": stats("process_seconds", seed_runs),
        "trainer_largest_wall_seconds": stats("wall_seconds", last),
    }
    seed_time, trainer_time = summary["seed_time_to_target"], summary["trainer_time_to_target"]
    best, final = summary["trainer_best_within_budget"], summary["trainer_final_accuracy"]
    gain = summary["gain"]
    summary["goals"] = {
        # On the means over seeds; `speedup` and `gain` in the summary give the worst seed too.
        "time_to_target_at_most_one_fifth": bool(
            seed_time and trainer_time and seed_time["mean"] >= SPEEDUP_GOAL * trainer_time["mean"]
        ),
        "at_least_one_point_higher": bool(gain and gain["mean"] >= GAIN_GOAL - TOLERANCE),
        "spread_at_most_one_point": bool(
            best and final and max(best["spread"], final["spread"]) <= SPREAD_GOAL + TOLERANCE
        ),
    }
    return summary


def seconds_cell(stats: dict[str, float] | None) -> str:
    if stats is None:
        return "not reached"
    return f"{stats['mean']:.1f} ({stats['min']:.1f}-{stats['max']:.1f})"


def accuracy_cell(stats: dict[str, float] | None) -> str:
    if stats is None:
        return "—"
    return f"{points(stats['mean'])} ± {100 * stats['spread']:.1f} (spread)"


def print_report(report: dict[str, Any]) -> None:
    s, seed_runs, trainer_runs = report["summary"], report["seed_runs"], report["trainer_runs"]
    settings = report["settings"]
    print(
        f"digits (1,265 train / 266 test), {settings['model']} from scratch, {len(seed_runs)} seeds; "
        f"seed loop {settings['seed_epochs']} epochs at {settings['image_size_seed']} px "
        f"batch {settings['batch_size_seed']}; "
        f"trainer recipe auto, epoch ceilings {settings['trainer_epochs']}, options {settings['options']}; "
        f"{report['threads']} threads"
    )
    first = trainer_runs[0]["curve"][-1]
    print(
        f"trainer chose: {first['image_size']} px, batch {first['batch_size']}, {first['optimizer']} "
        f"lr {first['learning_rate']}, {first['precision']}\n"
    )
    speedup = s["speedup"]
    gain = s["gain"]
    rows = [
        ("target: seed's best test accuracy (mean, spread)", accuracy_cell(s["target"]), "", ""),
        (
            "time to target, s: mean (min-max)",
            seconds_cell(s["seed_time_to_target"]),
            seconds_cell(s["trainer_time_to_target"]),
            f"seed / trainer {speedup['mean']:.2f}x (worst seed {speedup['min']:.2f}x)" if speedup else "—",
        ),
        (
            f"best accuracy within the seed's wall time ({seconds_cell(s['seed_budget_seconds'])} s)",
            accuracy_cell(s["target"]),
            accuracy_cell(s["trainer_best_within_budget"]),
            f"{100 * gain['mean']:+.1f} points (min {100 * gain['min']:+.1f})" if gain else "—",
        ),
        (
            "final accuracy of the largest budget",
            accuracy_cell(s["seed_final_accuracy"]),
            accuracy_cell(s["trainer_final_accuracy"]),
            "",
        ),
        (
            "wall time of the largest budget, s",
            seconds_cell(s["seed_process_seconds"]) + " with test passes",
            seconds_cell(s["trainer_largest_wall_seconds"]),
            "",
        ),
    ]
    print("| | seed loop | trainer (recipe auto) | trainer vs seed |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\nper seed (wall seconds: test accuracy):")
    for seed_run, trainer_run in zip(seed_runs, trainer_runs, strict=True):
        seed_curve_text = ", ".join(
            f"{p['wall_seconds']:.1f}: {points(p['test_accuracy'])}" for p in seed_run["curve"]
        )
        trainer_curve_text = ", ".join(
            f"{p['wall_seconds']:.1f}: {points(p['test_accuracy'])} ({p['epochs_run']}/{p['epochs']} ep)"
            for p in trainer_run["curve"]
        )
        print(
            f"  seed {seed_run['seed']}: seed loop [{seed_curve_text}] "
            f"(start-up {seed_run['startup_seconds']:.1f} s, test passes {seed_run['eval_seconds']:.1f} s "
            f"off the clock)\n          trainer   [{trainer_curve_text}]"
        )
    last = trainer_runs[0]["curve"][-1]
    rest = last["wall_seconds"] - last["training_seconds"] - (last["data_seconds"] or 0)
    print(
        f"\ntrainer's largest budget, seed 0: {last['wall_seconds']:.1f} s wall = data ready "
        f"{last['data_seconds'] or 0:.1f} s + training and validation {last['training_seconds']:.1f} s "
        f"(epochs {last['epoch_seconds']}) + the rest {rest:.1f} s "
        "(start-up, fetch, layout checks, test pass, upload, verify, record)"
    )
    held = {name: "yes" if ok else "NO" for name, ok in s["goals"].items()}
    print(
        f"goals: time to target <= 1/5 of the seed's: {held['time_to_target_at_most_one_fifth']}; "
        f">= +1 point in the same wall time: {held['at_least_one_point_higher']}; "
        f"spread <= 1 point: {held['spread_at_most_one_point']}"
    )


def merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Several invocations' reports (same settings, other seeds) as one, summarised over all their seeds."""
    settings = [r["settings"] for r in reports]
    if any(other != settings[0] for other in settings[1:]):
        raise SystemExit("--merge: the reports were measured with different settings")
    seed_runs = [run for r in reports for run in r["seed_runs"]]
    trainer_runs = [run for r in reports for run in r["trainer_runs"]]
    return {
        "threads": reports[0]["threads"],
        "settings": settings[0],
        "seed_runs": seed_runs,
        "trainer_runs": trainer_runs,
        "summary": summarise(seed_runs, trainer_runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seed-epochs", type=int, default=5)
    parser.add_argument(
        "--trainer-epochs",
        type=lambda text: [int(e) for e in text.split(",")],
        default=[1, 2, 3, 5, 8],
        help="the trainer's epoch ceilings, one whole run each (default 1,2,3,5,8)",
    )
    parser.add_argument(
        "--model", default="resnet18", help="the trainer's model (the seed loop's is resnet18)"
    )
    parser.add_argument(
        "--image-size-seed", type=int, help="the seed loop's Resize (default 224, the seed's)"
    )
    parser.add_argument(
        "--option", action="append", default=[], help="extra trainer metadata, key=value (repeatable)"
    )
    parser.add_argument("--skip-seed", action="store_true", help="reuse the seed side of --seed-json")
    parser.add_argument("--seed-json", type=Path, help="a previous --json output")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds K … K+seeds-1 (default 0)")
    parser.add_argument("--merge", type=Path, nargs="+", help="report these --json outputs as one run")
    parser.add_argument("--json", action="store_true")
    # The child process that runs the seed loop.
    parser.add_argument("--side", choices=["seed"], help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--learning-rate", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "seed":
        print(json.dumps(seed_curve(args)))
        return
    if args.merge:
        merged = merge([json.loads(path.read_text()) for path in args.merge])
        if args.json:
            print(json.dumps(merged, indent=2))
        else:
            print_report(merged)
        return

    from tests.support.real_sets import write_digits_zip

    from benchmarks.trainer_vs_seed import BATCH_SIZE, IMAGE_SIZE

    args.image_size_seed = args.image_size_seed or IMAGE_SIZE
    args.option = parse_options(args.option)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))

    settings = {
        "model": args.model,
        "seed_epochs": args.seed_epochs,
        "image_size_seed": args.image_size_seed,
        "trainer_epochs": args.trainer_epochs,
        "batch_size_seed": BATCH_SIZE,
        "options": args.option,
    }
    seed_runs: list[dict[str, Any]] = []
    if args.skip_seed:
        if not args.seed_json:
            raise SystemExit("--skip-seed needs --seed-json PATH (a previous --json output)")
        previous = json.loads(args.seed_json.read_text())
        by_seed = {run["seed"]: run for run in previous["seed_runs"]}
        missing = [s for s in seeds if s not in by_seed]
        if missing:
            raise SystemExit(f"{args.seed_json} has no seed-loop run for seeds {missing}")
        seed_runs = [by_seed[s] for s in seeds]
        settings |= {
            k: previous["settings"][k] for k in ("seed_epochs", "image_size_seed", "batch_size_seed")
        }

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        zip_path = write_digits_zip(work / "digits.zip")
        data_dir = work / "extracted"
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(data_dir)
        trainer_runs = []
        for seed in seeds:
            if not args.skip_seed:
                seed_runs.append(seed_side(data_dir, args, seed))
                print(
                    f"  seed loop seed {seed}: {seed_runs[-1]['budget_seconds']:.1f} s, "
                    f"best test accuracy {points(seed_runs[-1]['target'])}",
                    file=sys.stderr,
                )
            trainer_runs.append(trainer_side(zip_path, work, args, seed))

    report = {
        "threads": torch.get_num_threads(),
        "settings": settings,
        "seed_runs": seed_runs,
        "trainer_runs": trainer_runs,
        "summary": summarise(seed_runs, trainer_runs),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)


if __name__ == "__main__":
    main()
