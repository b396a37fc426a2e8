"""The controller against kmock: a stateful emulation of the Kubernetes API over real HTTP (no cluster can
run here). kopf and the kubernetes client talk to it exactly as to a cluster. kmock has no Job controller:
tests play the cluster by PATCHing Job and Pod status. See ../shared/TESTING.md for its caveats."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml
from kubernetes import client

from tests.conftest import make_settings
from tests.support.kube import ClusterEmulator
from training_agent.controller import operator
from training_agent.core.kube import api_client
from training_agent.core.records import RecordsStore
from training_agent.core.records.sqlite import SQLiteRecords
from training_agent.core.settings import Settings

NAMESPACE = "ml"
CRD_FILE = Path(__file__).resolve().parents[2] / "deploy" / "crds" / "trainingruns.automl.dev.yaml"


def register_crd(server: kmock.KubernetesEmulator) -> None:
    """Serve the built-in kinds and our CRD's resource in the discovery API, as a cluster would."""
    server.resources.load_bundled()
    crd = yaml.safe_load(CRD_FILE.read_text())
    names = crd["spec"]["names"]
    server.resources[f"{crd['spec']['group']}/{crd['spec']['versions'][0]['name']}/{names['plural']}"] = {
        "kind": names["kind"],
        "singular": names["singular"],
        "namespaced": True,
        "shortnames": names["shortNames"],
        "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        "subresources": ["status"],
    }  # type: ignore[assignment]


def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": server}}],
                "users": [{"name": "test", "user": {"token": "test-token"}}],
                "contexts": [
                    {"name": "kmock", "context": {"cluster": "kmock", "user": "test", "namespace": NAMESPACE}}
                ],
                "current-context": "kmock",
            }
        )
    )
    return path


@pytest.fixture
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    return {**kmock_options, "cls": ClusterEmulator}


@pytest.fixture
async def cluster(kmock: kmock.KubernetesEmulator) -> kmock.KubernetesEmulator:
    register_crd(kmock)
    return kmock


@pytest.fixture
def k8s_settings(tmp_path: Path, cluster: kmock.KubernetesEmulator) -> Settings:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(cluster.url).rstrip("/"))
    return make_settings(
        tmp_path,
        kubeconfig=kubeconfig,
        namespace=NAMESPACE,
        executor="kubernetes",
        trainer_image="registry.example/trainer:1.0",
        trainer_gcs_secret="gcs-key",
        controller_resync_seconds=0.5,
        trainer_image_pull_grace_seconds=60,
    )


@pytest.fixture
def k8s_records(k8s_settings: Settings) -> RecordsStore:
    return SQLiteRecords(k8s_settings.resolved_database_path)


@pytest.fixture
def k8s_api(k8s_settings: Settings) -> client.ApiClient:
    return api_client(k8s_settings)


class OperatorThread:
    """The operator in a thread with its own event loop, as in production (its own process).

    kmock serves from the test's loop. In the same loop, cancelling kopf while one of its handler threads
    waits for kmock deadlocks: kopf's shutdown waits for the thread, the thread for kmock, kmock for the loop.
    """

    def __init__(self, settings: Settings, records: RecordsStore, api: client.ApiClient) -> None:
        self.loop = asyncio.new_event_loop()
        self.task: asyncio.Task[None] | None = None
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._main, args=(settings, records, api), daemon=True)
        self.thread.start()

    def _main(self, settings: Settings, records: RecordsStore, api: client.ApiClient) -> None:
        asyncio.set_event_loop(self.loop)
        self.task = self.loop.create_task(
            operator.run(
                settings,
                namespaces=[NAMESPACE],
                standalone=True,
                liveness_endpoint=None,
                records=records,
                api=api,
                scan=False,
            )
        )
        self.started.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            self.loop.run_until_complete(self.task)
        self.loop.close()

    def stop(self) -> None:
        self.started.wait(5)
        if self.task is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop already finished
                self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(timeout=30)


@pytest.fixture
async def controller(
    k8s_settings: Settings, k8s_records: RecordsStore, k8s_api: client.ApiClient
) -> AsyncIterator[Callable[[], Awaitable[OperatorThread]]]:
    """Start (and restart) operators; all are stopped at the end of the test."""
    running: list[OperatorThread] = []

    async def start() -> OperatorThread:
        op = OperatorThread(k8s_settings, k8s_records, k8s_api)
        running.append(op)
        await asyncio.sleep(0.5)  # let it log in and start its watches
        return op

    yield start
    for op in running:
        await asyncio.to_thread(op.stop)  # keep this loop (kmock's) free while kopf winds down


async def eventually(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy, for at most `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            last = check()
            if last:
                return last
        except (KeyError, LookupError):
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
