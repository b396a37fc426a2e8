"""The controller under a burst: N TrainingRuns created against kmock, timed from each run's creation to
its Job's creation. The controller is `training-agent controller` in its own process, as deployed; kmock
serves from this process.

Baseline, measured in the same run: N TrainingRuns created straight through the kubernetes client in a
namespace no controller watches (the API round-trip floor). Reports runs reconciled per second, their ratio
to the baseline's objects per second, and p50/p99 latency from run creation to Job creation.

    .venv/bin/python benchmarks/controller_reconcile.py [--runs 50]

kmock matches every request against its whole request history (kmock/_internal/apps.py), so its cost per
request grows with the requests served and the whole burst grows quadratically: 20 runs take seconds, 50 about
a minute, 200 did not finish in 15 minutes (py-spy: kmock's HTTPCriteria matching). The numbers measure the
controller only relative to that emulator; a real API server answers in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

import kmock  # noqa: E402
from tests.support.kube import CREATED_AT, ClusterEmulator, register_crd, write_kubeconfig  # noqa: E402

from training_agent.api.executors.kubernetes import spec_for  # noqa: E402
from training_agent.core.kube import TrainingRuns, api_client  # noqa: E402
from training_agent.core.records.sqlite import SQLiteRecords  # noqa: E402
from training_agent.core.settings import Settings  # noqa: E402
from training_agent.core.trainingrun import trainingrun_manifest  # noqa: E402

NAMESPACE = "bench"
BASELINE_NAMESPACE = "baseline"


def create_all(runs: TrainingRuns, bodies: list[dict[str, Any]], created: dict[str, float]) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        for body in bodies:
            pool.submit(_create, runs, body, created)


def _create(runs: TrainingRuns, body: dict[str, Any], created: dict[str, float]) -> None:
    created[body["metadata"]["name"]] = time.perf_counter()
    runs.create(body)


async def wait_for_jobs(names: list[str], seen: dict[str, float]) -> None:
    """Wait until every run has a Job; `seen` gets each Job's creation time as kmock recorded it."""
    deadline = time.perf_counter() + 600
    while time.perf_counter() < deadline:
        if all(("jobs", name) in CREATED_AT for name in names):
            seen.update({name: CREATED_AT[("jobs", name)] for name in names})
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("some runs got no Job")


async def main(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with ClusterEmulator() as cluster, kmock.Server(cluster):
            register_crd(cluster)
            settings = Settings(
                data_dir=Path(tmp),
                namespace=NAMESPACE,
                controller_resync_seconds=600,
                kubeconfig=write_kubeconfig(
                    Path(tmp) / "kubeconfig", str(cluster.url).rstrip("/"), NAMESPACE
                ),
            )
            records = SQLiteRecords(settings.resolved_database_path)
            api = api_client(settings)
            runs = TrainingRuns(api, NAMESPACE)
            projects = [records.create_project(f"p{i}", status="training", metadata={}) for i in range(count)]
            bodies = [trainingrun_manifest(spec_for(p.id, {}, settings), NAMESPACE) for p in projects]
            others = [
                trainingrun_manifest(spec_for(p.id, {}, settings), BASELINE_NAMESPACE) for p in projects
            ]

            started = time.perf_counter()
            await asyncio.to_thread(create_all, TrainingRuns(api, BASELINE_NAMESPACE), others, {})
            baseline_rate = count / (time.perf_counter() - started)

            controller = subprocess.Popen(
                [sys.executable, "-m", "training_agent", "controller", "--standalone", "--liveness", ""],
                env={
                    **os.environ,
                    **settings.to_env(),
                    "LOG_LEVEL": "WARNING",
                    "PYTHONPATH": str(ROOT / "src"),
                },
                stdout=subprocess.DEVNULL,
                stderr=open(os.environ.get("CONTROLLER_LOG", os.devnull), "w"),  # noqa: SIM115
            )
            try:
                await asyncio.sleep(5.0)  # imports, login, discovery, watches
                created: dict[str, float] = {}
                seen: dict[str, float] = {}
                names = [b["metadata"]["name"] for b in bodies]
                started = time.perf_counter()
                creating = asyncio.create_task(asyncio.to_thread(create_all, runs, bodies, created))
                await wait_for_jobs(names, seen)
                await creating
                elapsed = time.perf_counter() - started
            finally:
                controller.terminate()
                await asyncio.to_thread(controller.wait, 30)
    latencies = sorted(seen[n] - created[n] for n in names)
    cuts = statistics.quantiles(latencies, n=100)
    rate = count / elapsed
    print(
        f"{count} TrainingRuns against kmock; the controller in its own process; "
        f"{os.cpu_count()} CPUs shared by kmock, the client and the controller"
    )
    print(f"baseline: {baseline_rate:.0f} objects/s created through the client with no controller")
    print(
        f"controller: {rate:.1f} runs reconciled/s (all Jobs in {elapsed:.1f} s), "
        f"{rate / baseline_rate:.2f}x baseline"
    )
    print(
        f"run created -> Job created: p50 {cuts[49] * 1000:.0f} ms, p99 {cuts[98] * 1000:.0f} ms, "
        f"max {latencies[-1] * 1000:.0f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=50)
    asyncio.run(main(parser.parse_args().runs))
