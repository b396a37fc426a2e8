"""The project's trainer against the seed document's training loop, on one dataset, model and settings.

Baseline, measured in the same run: the loop of ../shared/seeds/001_1e8abe4859d47472.txt, step 4 —
ImageFolder, Resize((224, 224)), ToTensor, DataLoader(batch_size=32, shuffle=True) with no workers, Adam
(lr 0.001), cross-entropy, resnet18 with a new head. The seed loads ImageNet weights; neither side can
download them here, so both start from the same random weights (`--pretrained` uses the cached ones for both).

The trainer is the real pipeline (`TrainingRun` on the embedded SQLite store and a local bucket) with its
defaults: decode-once cache, device-side augmentation, channels_last, bf16 autocast where the hardware has
it. Reports each side's training images/s (the epochs only), the trainer's images/s including its one-off
decode of the dataset, the ratios, and the test accuracy each reaches.

    .venv/bin/python benchmarks/trainer_vs_seed.py [--epochs 2] [--per-class 64] [--source-size 448]
                                                   [--format JPEG|PNG] [--dataset ZIP] [--json]

Target (issue 6): at least 2.5x the seed's images/s on a 2-core CPU; on a GPU at least 5x and 5,000 img/s.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
from torch import nn, optim  # noqa: E402
from torchvision import datasets, models, transforms  # noqa: E402

from training_agent.core.records import open_records  # noqa: E402
from training_agent.core.settings import Settings  # noqa: E402
from training_agent.core.storage import ObjectStorage  # noqa: E402
from training_agent.synthetic import write_shapes_zip  # noqa: E402
from training_agent.trainer.pipeline import TrainingRun  # noqa: E402

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
    settings = Settings(data_dir=work / "data", work_dir=work / "work", log_level="WARNING")
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
    result = TrainingRun(
        project.id, settings=settings, records=records, storage=ObjectStorage(settings)
    ).execute()
    if not result.succeeded:
        raise SystemExit(f"the trainer failed: {result.error}")
    metrics = result.metrics
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
        "run_seconds": time.perf_counter() - started,
        "test_accuracy": metrics["test_accuracy"],
        "precision": metrics["precision"],
        "device": metrics["device"],
        "data_wait_s": sum(r["data_wait_s"] for r in metrics["history"]),
    }


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
    args = parser.parse_args()

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
        num_classes = len([p for p in (data_dir / "train").iterdir() if p.is_dir()])
        seed = seed_loop(data_dir, num_classes, args.epochs, args.pretrained)
        ours = project_trainer(zip_path, work, args.epochs, args.pretrained)

    report = {
        "threads": torch.get_num_threads(),
        "epochs": args.epochs,
        "seed_loop": seed,
        "trainer": ours,
        "speedup": ours["images_per_s"] / seed["images_per_s"],
        "speedup_with_decode": ours["images_per_s_with_decode"] / seed["images_per_s"],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"resnet18 {IMAGE_SIZE}px batch {BATCH_SIZE}, {args.epochs} epochs, {torch.get_num_threads()} threads"
    )
    print(
        f"seed loop : {seed['images_per_s']:8.1f} img/s   test accuracy {seed['test_accuracy']:.3f}   "
        f"(per epoch {seed['epoch_images_per_s']})"
    )
    print(
        f"trainer   : {ours['images_per_s']:8.1f} img/s   test accuracy {ours['test_accuracy']:.3f}   "
        f"({ours['precision']} on {ours['device']}; {ours['images_per_s_with_decode']:.1f} img/s "
        f"counting the {ours['decode_seconds']:.1f} s decode; per epoch {ours['epoch_images_per_s']}; "
        f"data wait {ours['data_wait_s']:.2f} s)"
    )
    print(f"speed-up  : {report['speedup']:.2f}x  ({report['speedup_with_decode']:.2f}x counting the decode)")


if __name__ == "__main__":
    main()
