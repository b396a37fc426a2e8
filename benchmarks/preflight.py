"""The API's dataset pre-flight on a 1 GB zip, against a full download of the same object.

Builds once, in a temporary folder, a ~1 GB zip of stored members of random bytes (by default 2,000 files of
512 KiB in train/val/test folders of 10 classes; about 10-20 s on a 2-core VM, most of it writing the file),
then, for each store, times several repetitions of:

- the pre-flight: `list_zip_members` (a stat and ranged reads of the object's end) + `plan_layout` with the
  default limits — what `POST /agents/training/start` adds before it claims the project;
- the baseline: `ObjectStorage.download` of the whole object into a file — what the trainer does first.

Stores: the local bucket (a folder; the file is in the page cache after the first read, so the download
measures a warm copy) and a GCS emulator over loopback with the real google-cloud-storage client:
gcp-storage-emulator in this process (`--emulator gcp`, default; it holds the 1 GB object in memory) or the
fake-gcs-server binary in its own process (`--emulator fake-gcs-server`). Reports medians, min/max, the
requests and bytes the pre-flight read, and the ratio pre-flight / download.

    .venv/bin/python benchmarks/preflight.py [--files 2000] [--file-kib 512] [--repeat 7] [--emulator gcp]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

# Run from anywhere: the repository root for the tests' fake-gcs-server launcher.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.fake_gcs import fake_gcs_server

from training_agent.core.datasets.layout import plan_layout
from training_agent.core.datasets.listing import list_zip_members
from training_agent.core.settings import Settings
from training_agent.core.storage import ObjectInfo, ObjectStorage

BUCKET = "preflight-bench"
SPLITS = {"train": 0.7, "val": 0.15, "test": 0.15}
CLASSES = 10


def build_zip(path: Path, files: int, file_bytes: int) -> float:
    """The dataset zip (stored members of random bytes, as photos are incompressible); returns seconds."""
    started = time.perf_counter()
    names = []
    for split, share in SPLITS.items():
        count = round(files * share)
        names += [f"dataset/{split}/class_{i % CLASSES:02d}/img_{i:05d}.jpg" for i in range(count)]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in names:
            zf.writestr(name, os.urandom(file_bytes))
    return time.perf_counter() - started


@dataclass
class Counting:
    """The storage, with the pre-flight's ranged reads counted."""

    storage: ObjectStorage
    reads: list[int] = field(default_factory=list)

    def stat(self, url: str) -> ObjectInfo | None:
        return self.storage.stat(url)

    def read_range(self, url: str, start: int, end: int) -> bytes:
        data = self.storage.read_range(url, start, end)
        self.reads.append(len(data))
        return data


def preflight(storage: Counting, url: str, settings: Settings, listings: list[float]) -> None:
    started = time.perf_counter()
    members = list_zip_members(storage, url)
    listings.append(time.perf_counter() - started)
    plan_layout(
        members,
        max_files=settings.max_dataset_files,
        max_bytes=settings.max_dataset_bytes,
        max_ratio=settings.max_compression_ratio,
    )


def timed(action: Callable[[], None], repeat: int) -> list[float]:
    action()  # warm-up: connections, imports, the page cache
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return times


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def gcp_storage_emulator() -> Iterator[str]:
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def measure(name: str, url: str, storage: ObjectStorage, settings: Settings, work: Path, repeat: int) -> None:
    counting = Counting(storage)
    listings: list[float] = []
    checks = timed(lambda: preflight(counting, url, settings, listings), repeat)
    listing = statistics.median(listings[1:])  # the warm-up's is not counted
    reads_per_check = len(counting.reads) // (repeat + 1)
    bytes_per_check = sum(counting.reads) // (repeat + 1)
    target = work / "downloaded.zip"

    def download() -> None:
        storage.download(url, target)
        target.unlink()

    downloads = timed(download, max(3, repeat // 2))
    check, full = statistics.median(checks), statistics.median(downloads)
    print(
        f"{name:28} pre-flight median {check * 1000:8.1f} ms (min {min(checks) * 1000:.1f}, max "
        f"{max(checks) * 1000:.1f}; listing alone {listing * 1000:.1f} ms, {reads_per_check} ranged "
        f"reads, {bytes_per_check / 1024:,.0f} KiB) | "
        f"download median {full:6.2f} s (min {min(downloads):.2f}, max {max(downloads):.2f}) | "
        f"pre-flight / download {check / full:.4f} (the download takes {full / check:,.0f}x as long)",
        flush=True,
    )


def main(files: int, file_kib: int, repeat: int, emulator: str) -> None:
    with tempfile.TemporaryDirectory(prefix="preflight-bench-") as tmp:
        work = Path(tmp)
        bucket_dir = work / "bucket"
        (bucket_dir / "datasets").mkdir(parents=True)
        archive = bucket_dir / "datasets" / "big.zip"
        seconds = build_zip(archive, files, file_kib * 1024)
        size = archive.stat().st_size
        print(
            f"built {archive.name}: {files:,} stored members, {size / 1e9:.2f} GB in {seconds:.1f} s",
            flush=True,
        )

        settings = Settings(data_dir=work / "data", local_bucket_dir=bucket_dir)
        measure("local bucket", archive.as_uri(), ObjectStorage(settings), settings, work, repeat)

        server = gcp_storage_emulator if emulator == "gcp" else fake_gcs_server
        with server() as host:
            os.environ["STORAGE_EMULATOR_HOST"] = host
            gcs_settings = Settings(data_dir=work / "data", GCP_BUCKET_NAME=BUCKET)
            storage = ObjectStorage(gcs_settings)
            if emulator != "gcp":
                storage.gcs.client.create_bucket(BUCKET)
            url = f"gs://{BUCKET}/datasets/big.zip"
            started = time.perf_counter()
            storage.upload(archive, url)
            print(f"uploaded to {emulator} in {time.perf_counter() - started:.1f} s", flush=True)
            measure(f"GCS emulator ({emulator})", url, storage, gcs_settings, work, repeat)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--file-kib", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--emulator", choices=["gcp", "fake-gcs-server"], default="gcp")
    args = parser.parse_args()
    main(args.files, args.file_kib, args.repeat, args.emulator)
