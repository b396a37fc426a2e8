"""Training throughput (images/s) of the trainer, end to end, against the seed loop, per model, on one device.

The data: one dataset zip of generated JPEGs (coloured shapes on noise, `training_agent.synthetic`), by
default 4 classes x 2,500 training images of 256x256 px (val and test: a twentieth of that per class each);
this measures speed, not accuracy. The zip is written in parallel chunks (one process per CPU) and merged.

- The trainer: for each of `--models`, the real `training-agent train --project-id …` command in a fresh
  process on a project in a fresh embedded SQLite store with a local-folder bucket (`benchmarks/common.py`),
  metadata {"preferred_model": M, "pretrained": false, "image_size": 224, "batch_size": B, "epochs": E,
  "seed": 0}, with TRAINING_AGENT_DEVICE=auto (unless set) and any `--setting KEY=VALUE` as
  TRAINING_AGENT_KEY=VALUE in its environment (`--setting COMPILE=true` against a run without it measures
  torch.compile). Its images/s: the per-epoch `images_per_s` of the model's history (the training steps, the
  data included: the decode-once cache's batches, device-side augmentation), median of the epochs after the
  first (the first pays cuDNN autotuning, compilation, warm-up). Also its precision, device, world size, the
  one-off decode ("Data ready") and the wall time of the whole command.
- The seed loop: step 4 of ../shared/seeds/001_1e8abe4859d47472.txt as benchmarks/time_to_accuracy.py runs it
  (`seed_curve`: ImageFolder over the unzipped folders, Resize, ToTensor, DataLoader without workers, Adam
  0.001, cross-entropy, a new head; on the GPU where there is one), in a fresh process, on the same images at
  the same batch, image size and epochs, with the same model (for a model other than resnet18 the loop's
  `models.resnet18` is pointed at that model's builder; the loop is otherwise unchanged). Its images/s: the
  training images over each epoch's seconds (its test pass after each epoch is off the clock), median of the
  epochs after the first.

    .venv/bin/python benchmarks/gpu_throughput.py [--models resnet18,resnet50] [--batch 256] [--epochs 3]
        [--image-size 224] [--images-per-class 2500] [--classes 4] [--source-size 256]
        [--setting COMPILE=true ...] [--timeout 1800] [--json] [--quick]

`--quick`: 2 classes x 40 images of 64 px, 64 px, batch 16, 2 epochs, resnet18 only: a smoke test that runs on
a CPU in about a minute; its numbers mean nothing for the goal.

Goal (the issue): on one H100, at least 8,000 images/s for resnet18 at 224 px, and at least 10x the seed loop.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "src"))

import torch  # noqa: E402

from benchmarks.common import run_trainer  # noqa: E402

GOAL_IMAGES_PER_S = 8000.0  # resnet18 at 224 px on one H100
GOAL_RATIO = 10.0  # against the seed loop
QUICK = {
    "models": "resnet18",
    "classes": 2,
    "images_per_class": 40,
    "source_size": 64,
    "image_size": 64,
    "batch": 16,
    "epochs": 2,
}


def steady(values: list[float]) -> float:
    """The median of the epochs after the first (the first pays autotuning and warm-up), else the one."""
    return statistics.median(values[1:] if len(values) > 1 else values)


def _split_evenly(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def write_dataset(path: Path, *, classes: int, per_class: int, source_size: int) -> dict[str, int]:
    """The JPEG dataset zip: train/val/test, `per_class` training images per class and a twentieth of that
    (at least 2) each for val and test, written as chunks in parallel and merged. Returns the split sizes."""
    from training_agent.synthetic import write_shapes_zip

    eval_per_class = max(2, per_class // 20)
    chunks = max(1, min(os.cpu_count() or 1, per_class // 100))
    counts = list(
        zip(
            _split_evenly(per_class, chunks),
            _split_evenly(eval_per_class, chunks),
            _split_evenly(eval_per_class, chunks),
            strict=True,
        )
    )
    parts = [path.with_name(f"{path.stem}-part{k}.zip") for k in range(chunks)]
    with ProcessPoolExecutor(max_workers=chunks) as pool:
        futures = [
            pool.submit(
                write_shapes_zip,
                part,
                classes=classes,
                per_class=count,
                image_size=source_size,
                seed=k,
                image_format="JPEG",
            )
            for k, (part, count) in enumerate(zip(parts, counts, strict=True))
        ]
        for future in futures:
            future.result()
    sizes = {"train": 0, "val": 0, "test": 0}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as out:  # JPEGs: nothing to deflate
        for k, part in enumerate(parts):
            with zipfile.ZipFile(part) as zf:
                for info in zf.infolist():
                    if info.is_dir():
                        continue
                    split, shape, name = info.filename.split("/")
                    out.writestr(f"{split}/{shape}/c{k:02d}_{name}", zf.read(info))
                    sizes[split] += 1
            part.unlink()
    return sizes


def device_name() -> str:
    """The GPU's name, else the CPU model from /proc/cpuinfo."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.partition(':')[2].strip()} ({os.cpu_count()} CPUs)"
    return f"CPU ({os.cpu_count()} CPUs)"


def trainer_side(zip_path: Path, work: Path, model: str, args: argparse.Namespace) -> dict[str, Any]:
    metadata = {
        "preferred_model": model,
        "pretrained": False,
        "image_size": args.image_size,
        "batch_size": args.batch,
        "epochs": args.epochs,
        "seed": 0,
    }
    run = run_trainer(zip_path, work, metadata, timeout=args.timeout)
    if run.error:
        return {"error": run.error, "wall_seconds": run.wall_seconds}
    m = run.metrics
    epochs = [float(r["images_per_s"]) for r in m["history"]]
    return {
        "images_per_s": steady(epochs),
        "epoch_images_per_s": epochs,
        "epoch_seconds": [r["seconds"] for r in m["history"]],
        "data_wait_s": [r["data_wait_s"] for r in m["history"]],
        "peak_memory_mib": max((r.get("peak_memory_mib") or 0.0) for r in m["history"]),
        "precision": m.get("precision"),
        "device": m.get("device"),
        "world_size": m.get("world_size"),
        "global_batch_size": m.get("global_batch_size"),
        "data_seconds": run.data_seconds,
        "wall_seconds": run.wall_seconds,
        "error": None,
    }


def seed_side(data_dir: Path, model: str, args: argparse.Namespace) -> dict[str, Any]:
    """The seed loop for `model` in a fresh process (this script with --side seed)."""
    command = [sys.executable, __file__, "--side", "seed", "--data-dir", str(data_dir), "--models", model]
    command += [
        "--image-size",
        str(args.image_size),
        "--batch",
        str(args.batch),
        "--epochs",
        str(args.epochs),
    ]
    started = time.perf_counter()
    try:
        child = subprocess.run(command, capture_output=True, text=True, check=False, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout:.0f} s", "wall_seconds": args.timeout}
    wall = time.perf_counter() - started
    if child.returncode != 0:
        return {"error": f"exit {child.returncode}: {child.stderr.strip()[-2000:]}", "wall_seconds": wall}
    loop = json.loads(child.stdout.strip().splitlines()[-1])
    epochs = [loop["train_images"] / s for s in loop["train_seconds"]]
    return {
        "images_per_s": steady(epochs),
        "epoch_images_per_s": [round(v, 2) for v in epochs],
        "epoch_seconds": [round(s, 3) for s in loop["train_seconds"]],
        "device": loop["device"],
        "wall_seconds": wall,
        "error": None,
    }


def run_seed_child(args: argparse.Namespace) -> None:
    """In the child: time_to_accuracy.seed_curve, the seed loop as written, for `args.models` (one model)."""
    import torchvision

    from benchmarks import time_to_accuracy
    from benchmarks.trainer_vs_seed import LEARNING_RATE

    loop_args = argparse.Namespace(
        data_dir=args.data_dir,
        image_size_seed=args.image_size,
        seed=0,
        batch_size=args.batch,
        learning_rate=LEARNING_RATE,
        seed_epochs=args.epochs,
    )
    model = args.models
    swap: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if model != "resnet18":  # the loop builds models.resnet18(weights=None): point it at this model
        builder = getattr(torchvision.models, model)
        swap = mock.patch.object(time_to_accuracy, "models", SimpleNamespace(resnet18=builder))
    with swap:
        print(json.dumps(time_to_accuracy.seed_curve(loop_args)))


def progress_line(side: dict[str, Any]) -> str:
    """One side's result for the progress lines on stderr."""
    if side["error"]:
        return f"failed after {side['wall_seconds']:.1f} s: {side['error'][:300]}"
    per_epoch = side["epoch_images_per_s"]
    return f"{side['images_per_s']:,.1f} img/s (per epoch {per_epoch}), {side['wall_seconds']:.1f} s"


def print_report(report: dict[str, Any]) -> None:
    s = report["settings"]
    print(
        f"device: {report['device_name']}; dataset: {s['train_images']} train JPEGs of {s['source_size']} px "
        f"({s['classes']} classes); {s['image_size']} px, batch {s['batch']}, {s['epochs']} epochs; "
        f"images/s = median of the epochs after the first; settings {s['settings'] or 'none'}"
        + ("; --quick: a smoke test, its numbers mean nothing for the goal" if s["quick"] else "")
    )
    print(
        "\n| model | batch | precision | device | trainer img/s | seed loop img/s | ratio "
        "| trainer wall s (decode s) | seed loop wall s |\n|---|---|---|---|---|---|---|---|---|"
    )
    for row in report["rows"]:
        t, seed = row["trainer"], row["seed_loop"]
        trainer_cell = f"failed: {t['error'][:200]}" if t["error"] else f"{t['images_per_s']:,.1f}"
        seed_cell = f"failed: {seed['error'][:200]}" if seed["error"] else f"{seed['images_per_s']:,.1f}"
        ratio = f"{row['ratio']:.1f}x" if row["ratio"] is not None else "—"
        device = (
            "—" if t["error"] else f"{t['device']}" + (f" x{t['world_size']}" if t["world_size"] != 1 else "")
        )
        decode = t.get("data_seconds")
        wall = f"{t['wall_seconds']:.1f}" + (f" ({decode:.1f})" if decode is not None else "")
        print(
            f"| {row['model']} | {s['batch']} | {t.get('precision') or '—'} | {device} | {trainer_cell} "
            f"| {seed_cell} | {ratio} | {wall} | {seed['wall_seconds']:.1f} |"
        )
    print("\nper epoch img/s:")
    for row in report["rows"]:
        for side in ("trainer", "seed_loop"):
            if not row[side]["error"]:
                print(f"  {row['model']} {side}: {row[side]['epoch_images_per_s']}")
    goal = report["goal"]
    print(
        f"\ngoal (one H100, resnet18 at 224 px): >= {GOAL_IMAGES_PER_S:,.0f} img/s and >= {GOAL_RATIO:.0f}x "
        f"the seed loop. {goal['verdict']}"
    )


def judge(rows: list[dict[str, Any]], name: str, args: argparse.Namespace) -> dict[str, Any]:
    row = next((r for r in rows if r["model"] == "resnet18"), None)
    goal: dict[str, Any] = {"images_per_s": GOAL_IMAGES_PER_S, "ratio": GOAL_RATIO}
    if row is None or row["trainer"]["error"]:
        return goal | {"applies": False, "verdict": "Not measured: no resnet18 trainer result in this run."}
    images = row["trainer"]["images_per_s"]
    ratio = row["ratio"]
    fast, ahead = images >= GOAL_IMAGES_PER_S, ratio is not None and ratio >= GOAL_RATIO
    applies = "H100" in name and args.image_size == 224 and not args.quick
    verdict = (
        f"resnet18 here: {images:,.0f} img/s ({'yes' if fast else 'NO'}), "
        + (f"{ratio:.1f}x ({'yes' if ahead else 'NO'})" if ratio is not None else "ratio not measured")
        + (
            "."
            if applies
            else f" — not the goal's setting ({name}, {args.image_size} px"
            + (", --quick" if args.quick else "")
            + "): these numbers do not count for it."
        )
    )
    return goal | {"applies": applies, "images_per_s_met": fast, "ratio_met": ahead, "verdict": verdict}


def parse_settings(pairs: list[str]) -> dict[str, str]:
    """`KEY=VALUE` as TRAINING_AGENT_KEY=VALUE (a key that already has the prefix keeps it)."""
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--setting wants KEY=VALUE, got {pair!r}")
        key = key.upper()
        settings[key if key.startswith("TRAINING_AGENT_") else f"TRAINING_AGENT_{key}"] = value
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,resnet50", help="comma-separated torchvision names")
    parser.add_argument("--batch", type=int, help="default: 256 where there is a GPU, else 32")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--images-per-class", type=int, default=2500, help="training images per class")
    parser.add_argument("--classes", type=int, default=4, choices=[2, 3, 4])
    parser.add_argument("--source-size", type=int, default=256, help="pixel size of the generated JPEGs")
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        help="KEY=VALUE: TRAINING_AGENT_KEY=VALUE for the trainer (repeatable), e.g. COMPILE=true",
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run, each side")
    parser.add_argument("--quick", action="store_true", help="a CPU smoke test of about a minute")
    parser.add_argument("--json", action="store_true")
    # The child process that runs the seed loop.
    parser.add_argument("--side", choices=["seed"], help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if args.side == "seed":
        run_seed_child(args)
        return
    if args.batch is None:
        args.batch = 256 if torch.cuda.is_available() else 32
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    settings = parse_settings(args.setting)
    os.environ.setdefault("TRAINING_AGENT_DEVICE", "auto")
    os.environ.update(settings)  # run_trainer passes this process's environment to the trainer

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        sizes = write_dataset(
            work / "dataset.zip",
            classes=args.classes,
            per_class=args.images_per_class,
            source_size=args.source_size,
        )
        print(f"  dataset: {sizes} in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
        data_dir = work / "extracted"
        with zipfile.ZipFile(work / "dataset.zip") as zf:
            zf.extractall(data_dir)
        for model in models:
            trainer = trainer_side(work / "dataset.zip", work, model, args)
            print(f"  {model} trainer: {progress_line(trainer)}", file=sys.stderr, flush=True)
            seed = seed_side(data_dir, model, args)
            print(f"  {model} seed loop: {progress_line(seed)}", file=sys.stderr, flush=True)
            ratio = None
            if not trainer["error"] and not seed["error"]:
                ratio = trainer["images_per_s"] / seed["images_per_s"]
            rows.append({"model": model, "trainer": trainer, "seed_loop": seed, "ratio": ratio})

    name = device_name()
    report = {
        "device_name": name,
        "torch": torch.__version__,
        "settings": {
            "quick": args.quick,
            "models": models,
            "batch": args.batch,
            "epochs": args.epochs,
            "image_size": args.image_size,
            "classes": args.classes,
            "images_per_class": args.images_per_class,
            "source_size": args.source_size,
            "train_images": sizes["train"],
            "settings": settings | {"TRAINING_AGENT_DEVICE": os.environ["TRAINING_AGENT_DEVICE"]},
        },
        "rows": rows,
        "goal": judge(rows, name, args),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)


if __name__ == "__main__":
    main()
