"""Load on the API over loopback, beside a bare FastAPI app measured in the same run.

Each server runs in its own uvicorn process; the load comes from this process (asyncio + httpx, N
concurrent connections for D seconds after a warm-up). Reports requests/s and p50/p99 latency for
`GET /health` and `GET /agents/training/status/{id}` (a project with 20 agent_logs rows, embedded SQLite),
and their ratio to the bare app's one route.

    .venv/bin/python benchmarks/api_load.py [--seconds 5] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def uvicorn_process(target: str, env: dict[str, str], *extra: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            target,
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
            *extra,
        ],
        env={**os.environ, **env},
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"{target} did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def _connection(host: str, port: int, request: bytes, stop: float, latencies: list[float]) -> None:
    """One keep-alive HTTP/1.1 connection sending `request` back to back. A minimal client on purpose:
    a full HTTP client library costs more CPU than the servers under test, on the same 2 cores."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            if status != 200:
                raise RuntimeError(f"HTTP {status}")
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


async def load(url: str, seconds: float, concurrency: int) -> list[float]:
    parts = httpx.URL(url)
    request = f"GET {parts.raw_path.decode()} HTTP/1.1\r\nHost: {parts.host}\r\n\r\n".encode()
    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    await asyncio.gather(
        *(_connection(parts.host, parts.port or 80, request, stop, latencies) for _ in range(concurrency))
    )
    return latencies


def measure(url: str, seconds: float, concurrency: int) -> dict[str, float]:
    asyncio.run(load(url, 1.0, concurrency))  # warm-up: connections, caches, imports
    latencies = asyncio.run(load(url, seconds, concurrency))
    cuts = statistics.quantiles(latencies, n=100)
    return {"rps": len(latencies) / seconds, "p50_ms": cuts[49] * 1000, "p99_ms": cuts[98] * 1000}


def seed_project(data_dir: Path) -> str:
    sys.path.insert(0, str(ROOT / "src"))
    from training_agent.core.records.sqlite import SQLiteRecords

    records = SQLiteRecords(data_dir / "records.db")
    project = records.create_project("bench", status="pending_evaluation", metadata={"epochs": 10})
    for epoch in range(1, 21):
        records.insert_log(
            project.id,
            "training_agent",
            "info",
            f"Epoch {epoch}/20",
            {
                "epoch": epoch,
                "train_loss": 0.5,
                "val_loss": 0.6,
                "val_accuracy": 0.8,
                "images_per_s": 100.0,
                "seconds": 2.0,
                "total_epochs": 20,
            },
        )
    return str(project.id)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        project_id = seed_project(data_dir)
        env = {"TRAINING_AGENT_DATA_DIR": str(data_dir), "LOG_LEVEL": "WARNING"}
        results = {}
        with uvicorn_process("benchmarks.bare_app:app", {}) as bare:
            results["bare FastAPI GET /health"] = measure(f"{bare}/health", args.seconds, args.concurrency)
        with uvicorn_process("training_agent.api.main:create_app", env, "--factory") as api:
            results["GET /health"] = measure(f"{api}/health", args.seconds, args.concurrency)
            results["GET /agents/training/status/{id}"] = measure(
                f"{api}/agents/training/status/{project_id}", args.seconds, args.concurrency
            )
    baseline = results["bare FastAPI GET /health"]["rps"]
    print(
        f"{args.concurrency} concurrent connections, {args.seconds:.0f} s per endpoint, loopback, "
        f"{os.cpu_count()} CPUs (load generator on the same machine)"
    )
    print(f"{'endpoint':36} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs bare':>8}")
    for name, r in results.items():
        print(f"{name:36} {r['rps']:9.0f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['rps'] / baseline:8.2f}")


if __name__ == "__main__":
    main()
