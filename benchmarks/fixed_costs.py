"""Two fixed costs of every trainer run, each against its baseline measured in the same run.

1. Process start and exit with torch and torchvision imported, with and without `gc.freeze()` right after
   the imports (what `training-agent train` does): the final garbage collection at exit walks the ~3 million
   objects those imports create unless they are frozen.
2. One `agent_logs` row in the embedded SQLite records, right after a checkpoint-sized file was written,
   with `synchronous=FULL` (SQLite's default) and `NORMAL` (what `SQLiteRecords` sets): FULL fsyncs the
   write-ahead log on every commit, and that fsync waits for the big file's dirty pages too.

    .venv/bin/python benchmarks/fixed_costs.py [--runs 5] [--rows 20] [--file-mb 135]

Prints the median of each variant and the ratio; runs alternate so that a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMPORTS = "import torch, torchvision"


def time_process(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - started


def process_start_and_exit(runs: int) -> dict[str, float]:
    plain, frozen = [], []
    for _ in range(runs):
        plain.append(time_process(IMPORTS))
        frozen.append(time_process(f"{IMPORTS}; import gc; gc.freeze()"))
    return {"plain_s": statistics.median(plain), "gc_freeze_s": statistics.median(frozen)}


def log_row_ms(folder: Path, synchronous: str, rows: int, file_mb: int) -> float:
    """Median milliseconds of one committed log row written right after `file_mb` MB hit the page cache."""
    db = sqlite3.connect(folder / f"{synchronous}.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("CREATE TABLE IF NOT EXISTS agent_logs (id INTEGER PRIMARY KEY, message TEXT)")
    block = os.urandom(1024**2)
    times = []
    for row in range(rows):
        with (folder / "checkpoint.pt").open("wb") as file:
            for _ in range(file_mb):
                file.write(block)
        started = time.perf_counter()
        db.execute("INSERT INTO agent_logs (message) VALUES (?)", (f"Epoch {row}",))
        times.append((time.perf_counter() - started) * 1000)
    db.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="process starts per variant")
    parser.add_argument("--rows", type=int, default=20, help="log rows per SQLite variant")
    parser.add_argument("--file-mb", type=int, default=135, help="the checkpoint written before each row")
    args = parser.parse_args()

    starts = process_start_and_exit(args.runs)
    print(
        f"torch + torchvision import and exit, median of {args.runs}: {starts['plain_s']:.2f} s plain, "
        f"{starts['gc_freeze_s']:.2f} s with gc.freeze() ({starts['gc_freeze_s'] / starts['plain_s']:.2f}x)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        full = log_row_ms(Path(tmp), "FULL", args.rows, args.file_mb)
        normal = log_row_ms(Path(tmp), "NORMAL", args.rows, args.file_mb)
    print(
        f"one log row after a {args.file_mb} MB write, median of {args.rows}: "
        f"{full:.2f} ms synchronous=FULL, {normal:.2f} ms NORMAL ({normal / full:.3f}x)"
    )


if __name__ == "__main__":
    main()
