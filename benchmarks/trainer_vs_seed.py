"""The project's trainer against the seed document's training loop, on one dataset, model and settings.

Baseline, measured in the same run: the loop of ../shared/seeds/001_1e8abe4859d47472.txt, step 4 —
ImageFolder, Resize((224, 224)), ToTensor, DataLoader(batch_size=32, shuffle=True) with no workers, Adam
(lr 0.001), cross-entropy, resnet18 with a new head. The seed loads ImageNet weights; neither side can
download them here, so both start from random weights, seeded (`--pretrained` uses the cached ones for both).

The trainer is the real `training-agent train` command on the embedded SQLite store and a local bucket,
with its defaults: decode-once cache, device-side augmentation, channels_last, bf16 autocast where the
hardware has it, and its malloc tuning (trainer/allocator.py). Each side runs in a fresh process of its own,
so neither inherits the other's heap, thread pools or oneDNN caches. A third run, the seed loop with the
same malloc tuning, shows how much of the speed-up the allocator alone accounts for. Reports each side's
training images/s (the epochs only), the trainer's images/s including its one-off decode of the dataset,
the ratios, and the test accuracy each reaches.

    .venv/bin/python benchmarks/trainer_vs_seed.py [--epochs 2] [--per-class 64] [--source-size 448]
                                                   [--format JPEG|PNG] [--dataset ZIP] [--json]

Target (issue 6): at least 2.5x the seed's images/s on a 2-core CPU; on a GPU at least 5x and 5,000 img/s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
from torch import nn, optim  # noqa: E402
from torchvision import datasets, models, transforms  # noqa: E402

from training_agent.core.records import open_records  # noqa: E402
from training_agent.core.settings import Settings  # noqa: E402
from training_agent.synthetic import write_shapes_zip  # noqa: E402
from training_agent.trainer.allocator import keep_freed_memory  # noqa: E402

IMAGE_SIZE = 224
BATCH_SIZE = 32
LEARNING_RATE = 0.001


def seed_loop(data_dir: Path, num_classes: int, epochs: int, pretrained: bool) -> dict[str, Any]:
    """Step 4 of the seed document, timed; plus a test pass with the same transform."""
    transform = transforms.Compose([transforms.Resize((IMAGE_SIZE, IMAGE_SIZE)), transforms.ToTensor()])
    train_ds = datasets.ImageFolder(root=f"{data_dir}/train", transform=transform)
    train_loader = torch.utils.data.DataLoader(train_ds, batch_size=BATCH_SIZE, shuffle=True)

    model = models.resnet18(weights="IMAGENET1K_V1" if pretrained else None)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=LEARNING_RATE)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)  # the seed runs on the CPU; on a GPU the baseline gets the GPU too
    started = time.perf_counter()
    epoch_seconds = []
    for _epoch in range(epochs):
        epoch_started = time.perf_counter()
        model.train()
        for cpu_imgs, cpu_labels in train_loader:
            imgs, labels = cpu_imgs.to(device), cpu_labels.to(device)
            optimizer.zero_grad()
            outputs = model(imgs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        epoch_seconds.append(time.perf_counter() - epoch_started)
    seconds = time.perf_counter() - started

    test_ds = datasets.ImageFolder(root=f"{data_dir}/test", transform=transform)
    correct = 0
    model.eval()
    with torch.no_grad():
        for imgs, labels in torch.utils.data.DataLoader(test_ds, batch_size=BATCH_SIZE):
            correct += int((model(imgs.to(device)).argmax(1).cpu() == labels).sum())
    return {
        "images_per_s": len(train_ds) * epochs / seconds,
        "epoch_images_per_s": [round(len(train_ds) / t, 2) for t in epoch_seconds],
        "train_seconds": seconds,
        "test_accuracy": correct / len(test_ds),
    }


def project_trainer(zip_path: Path, work: Path, epochs: int, pretrained: bool) -> dict[str, Any]:
    """`training-agent train` in a child process, on a project made in the embedded records."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "TRAINING_AGENT_DATA_DIR": str(work / "data"),
        "TRAINING_AGENT_WORK_DIR": str(work / "work"),
        "LOG_LEVEL": "WARNING",
    }
    settings = Settings(data_dir=work / "data", work_dir=work / "work")
    records = open_records(settings)
    project = records.create_project(
        "bench",
        status="pending_training",
        metadata={
            "preferred_model": "resnet18",
            "pretrained": pretrained,
            "epochs": epochs,
            "image_size": IMAGE_SIZE,
            "batch_size": BATCH_SIZE,
            "learning_rate": LEARNING_RATE,
            "seed": 0,
        },
    )
    records.create_dataset(project.id, gcs_url=str(zip_path))
    started = time.perf_counter()
    child = subprocess.run(
        [sys.executable, "-m", "training_agent", "train", "--project-id", str(project.id), "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    run_seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"the trainer failed (exit {child.returncode}):\n{child.stderr}{child.stdout}")
    metrics = json.loads(child.stdout)["metrics"]
    train_images = metrics["dataset"]["images"]["train"] * metrics["epochs_run"]
    epoch_seconds = sum(r["seconds"] for r in metrics["history"])
    data_log = next(
        log for log in records.recent_logs(project.id, limit=200) if log.message.startswith("Data ready")
    )
    prepare_seconds = float(data_log.metadata["seconds"])
    return {
        "images_per_s": metrics["images_per_second"],
        "epoch_images_per_s": [r["images_per_s"] for r in metrics["history"]],
        "images_per_s_with_decode": train_images / (epoch_seconds + prepare_seconds),
        "train_seconds": epoch_seconds,
        "decode_seconds": prepare_seconds,
        "run_seconds": run_seconds,
        "test_accuracy": metrics["test_accuracy"],
        "precision": metrics["precision"],
        "device": metrics["device"],
        "data_wait_s": sum(r["data_wait_s"] for r in metrics["history"]),
    }


def seed_process(data_dir: Path, epochs: int, pretrained: bool, *, malloc_tuning: bool) -> dict[str, Any]:
    """The seed loop in a fresh child process (this script with --side seed)."""
    command = [sys.executable, __file__, "--side", "seed", "--data-dir", str(data_dir)]
    command += ["--epochs", str(epochs)]
    command += ["--pretrained"] * pretrained + ["--malloc-tuning"] * malloc_tuning
    child = subprocess.run(command, capture_output=True, text=True, check=False)
    if child.returncode != 0:
        raise SystemExit(f"the seed loop failed (exit {child.returncode}):\n{child.stderr}")
    result: dict[str, Any] = json.loads(child.stdout)
    return result


def run_seed_side(args: argparse.Namespace) -> None:
    if args.malloc_tuning:
        keep_freed_memory()
    torch.manual_seed(0)
    num_classes = len([p for p in (args.data_dir / "train").iterdir() if p.is_dir()])
    print(json.dumps(seed_loop(args.data_dir, num_classes, args.epochs, args.pretrained)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=64, help="training images per class")
    parser.add_argument("--source-size", type=int, default=448, help="pixel size of the generated images")
    parser.add_argument("--format", default="JPEG", choices=["JPEG", "PNG"], help="of the generated images")
    parser.add_argument("--dataset", type=Path, help="a dataset zip to use instead of generated shapes")
    parser.add_argument("--pretrained", action="store_true", help="start both from cached ImageNet weights")
    parser.add_argument("--json", action="store_true")
    # The child process that runs the seed loop.
    parser.add_argument("--side", choices=["seed"], help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--malloc-tuning", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "seed":
        run_seed_side(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        zip_path = args.dataset or write_shapes_zip(
            work / "dataset.zip",
            classes=args.classes,
            per_class=(args.per_class, max(args.per_class // 4, 2), max(args.per_class // 4, 2)),
            image_size=args.source_size,
            image_format=args.format,
        )
        data_dir = work / "extracted"
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(data_dir)
        seed = seed_process(data_dir, args.epochs, args.pretrained, malloc_tuning=False)
        ours = project_trainer(zip_path, work, args.epochs, args.pretrained)
        tuned_seed = seed_process(data_dir, args.epochs, args.pretrained, malloc_tuning=True)

    report = {
        "threads": torch.get_num_threads(),
        "epochs": args.epochs,
        "seed_loop": seed,
        "seed_loop_malloc_tuned": tuned_seed,
        "trainer": ours,
        "speedup": ours["images_per_s"] / seed["images_per_s"],
        "speedup_with_decode": ours["images_per_s_with_decode"] / seed["images_per_s"],
        "speedup_vs_malloc_tuned_seed": ours["images_per_s"] / tuned_seed["images_per_s"],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"resnet18 {IMAGE_SIZE}px batch {BATCH_SIZE}, {args.epochs} epochs, {torch.get_num_threads()} threads"
    )
    for label, side in (("seed loop", seed), ("seed+malloc", tuned_seed)):
        print(
            f"{label:<12}: {side['images_per_s']:8.1f} img/s   test accuracy {side['test_accuracy']:.3f}   "
            f"(per epoch {side['epoch_images_per_s']})"
        )
    print(
        f"{'trainer':<12}: {ours['images_per_s']:8.1f} img/s   test accuracy {ours['test_accuracy']:.3f}   "
        f"({ours['precision']} on {ours['device']}; {ours['images_per_s_with_decode']:.1f} img/s "
        f"counting the {ours['decode_seconds']:.1f} s decode; per epoch {ours['epoch_images_per_s']}; "
        f"data wait {ours['data_wait_s']:.2f} s)"
    )
    print(
        f"speed-up    : {report['speedup']:.2f}x  ({report['speedup_with_decode']:.2f}x counting the decode; "
        f"{report['speedup_vs_malloc_tuned_seed']:.2f}x against the seed loop with the same malloc tuning)"
    )


if __name__ == "__main__":
    main()
