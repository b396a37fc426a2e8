"""The controller's Prometheus metrics, scraped over HTTP from the operator's own metrics server after real
reconciles against kmock, and its JSON log lines naming the run they are about."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import kmock
import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from tests.controller.conftest import eventually
from tests.controller.test_operator import failed_condition, patch_job_status, run_status
from tests.controller.test_stuck_runs import _ago, make_pod, running, with_run_record
from tests.support.logs import CapturedLog, product_logging
from tests.support.postgres import free_port
from training_agent.core.records import Project, RecordsStore
from training_agent.core.settings import Settings


@pytest.fixture
def k8s_settings(k8s_settings: Settings) -> Settings:
    """The operator of these tests serves its metrics on a free port of the loopback interface."""
    return k8s_settings.model_copy(
        update={"controller_metrics_port": free_port(), "controller_metrics_host": "127.0.0.1"}
    )


@pytest.fixture
def json_log() -> Iterator[CapturedLog]:
    with product_logging("INFO", "json") as captured:
        yield captured


def scrape(settings: Settings) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample the controller serves, by name and labels, parsed by prometheus-client's own parser."""
    response = httpx.get(f"http://127.0.0.1:{settings.controller_metrics_port}/metrics", timeout=5)
    response.raise_for_status()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_reconciles_phases_job_delay_and_failures_are_scraped(
    cluster: kmock.KubernetesEmulator,
    k8s_api: client.ApiClient,
    k8s_settings: Settings,
    k8s_records: RecordsStore,
    json_log: CapturedLog,
    started_run: tuple[Project, str],
) -> None:
    project, name = started_run

    async def scraped() -> dict[Any, float]:
        return await asyncio.to_thread(scrape, k8s_settings)

    # The Job is visible before the delay is observed, and a reconcile is counted only once it has ended.
    samples = await eventually_async(
        scraped,
        lambda s: (
            value(s, "training_agent_controller_job_creation_delay_seconds_count") == 1
            and value(s, "training_agent_controller_reconciles_total", result="ok") >= 1
        ),
    )
    assert value(samples, "training_agent_controller_runs", phase="Succeeded") == 0

    await patch_job_status(
        k8s_api, name, failed_condition("DeadlineExceeded", "Job was active longer than specified")
    )
    await eventually(lambda: run_status(cluster, name).get("phase") == "Failed", what="Failed")

    # The failure is counted after the status patch that the poll above saw.
    samples = await eventually_async(
        scraped,
        lambda s: (
            value(s, "training_agent_controller_runs", phase="Failed") == 1
            and value(s, "training_agent_controller_job_failures_total", reason="DeadlineExceeded") == 1
        ),
    )
    assert value(samples, "training_agent_controller_runs", phase="Pending") == 0
    reconciles = value(samples, "training_agent_controller_reconciles_total", result="ok")
    assert reconciles >= 2
    # Counted and timed by two calls, while resyncs go on: a scrape may fall between them.
    timed = value(samples, "training_agent_controller_reconcile_duration_seconds_count", result="ok")
    assert reconciles - 1 <= timed <= reconciles + 1
    assert value(samples, "training_agent_controller_leases_expired_total") == 0

    # The controller's JSON lines about this run name it (ours through contextvars, kopf's through its
    # object reference), and every line is a JSON object.
    about = [r for r in json_log.records() if r.get("run_name") == name]
    assert any(r["message"].startswith("Created Job") and r["project_id"] == str(project.id) for r in about)
    assert any(r["logger"].startswith("kopf") for r in about)


async def test_an_expired_lease_is_counted(
    cluster: kmock.KubernetesEmulator,
    k8s_api: client.ApiClient,
    k8s_settings: Settings,
    k8s_records: RecordsStore,
    started_run: tuple[Project, str],
) -> None:
    project, name = started_run
    with_run_record(k8s_records, project, heartbeat_at=_ago(600))
    await patch_job_status(k8s_api, name, {"active": 1})
    await make_pod(k8s_api, name, running(started_s_ago=3600), age_s=3600)
    await eventually(lambda: run_status(cluster, name).get("reason") == "LeaseExpired", what="reaped")

    async def scraped() -> dict[Any, float]:
        return await asyncio.to_thread(scrape, k8s_settings)

    # The lease is counted before the status patch, the failure after it: wait for both.
    await eventually_async(
        scraped,
        lambda s: (
            value(s, "training_agent_controller_leases_expired_total") == 1
            and value(s, "training_agent_controller_job_failures_total", reason="LeaseExpired") == 1
        ),
    )


async def eventually_async(fetch: Any, check: Any, timeout: float = 15.0) -> Any:
    """Fetch until `check` holds for what came back, for at most `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = await fetch()
        if check(last):
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out; last scrape: {last!r}")
