"""Kubernetes test helpers: the CRD registered in kmock, a kubeconfig for it, the operator in a thread.

kmock with what an apiserver adds on creation (uid, resourceVersion, creationTimestamp), which the
emulator leaves out: kopf's JSON patches test resourceVersion, and owner references carry the uid.
Test-only; the product never sees this class."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp.web
import kmock
import yaml
from kmock._internal import enums, rendering
from kubernetes import client

from training_agent.controller import operator
from training_agent.core.records import RecordsStore
from training_agent.core.settings import Settings

CRD_FILE = Path(__file__).resolve().parents[2] / "deploy" / "crds" / "trainingruns.automl.dev.yaml"

_versions = itertools.count(1)


CREATED_AT: dict[tuple[str, str], float] = {}


class ClusterEmulator(kmock.KubernetesEmulator):
    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if (
            request.resource is not None
            and request.action == enums.action.CREATE
            and isinstance(request.data, dict)
        ):
            meta: dict[str, Any] = request.data.setdefault("metadata", {})
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("resourceVersion", str(next(_versions)))
            meta.setdefault(
                "creationTimestamp", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            )
            # When each object was created, for benchmarks that time the controller.
            CREATED_AT[(str(request.resource.plural), str(meta.get("name")))] = time.perf_counter()
        return await super()._handle(request)


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


def write_kubeconfig(path: Path, server: str, namespace: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": server}}],
                "users": [{"name": "test", "user": {"token": "test-token"}}],
                "contexts": [
                    {"name": "kmock", "context": {"cluster": "kmock", "user": "test", "namespace": namespace}}
                ],
                "current-context": "kmock",
            }
        )
    )
    return path


class OperatorThread:
    """The operator in a thread with its own event loop, as in production (its own process).

    kmock serves from the test's loop. In the same loop, cancelling kopf while one of its handler threads
    waits for kmock deadlocks: kopf's shutdown waits for the thread, the thread for kmock, kmock for the loop.
    """

    def __init__(
        self,
        settings: Settings,
        records: RecordsStore,
        api: client.ApiClient,
        namespace: str,
        liveness_endpoint: str | None = None,
    ) -> None:
        self.liveness_endpoint = liveness_endpoint
        self.loop = asyncio.new_event_loop()
        self.task: asyncio.Task[None] | None = None
        self.started = threading.Event()
        self.thread = threading.Thread(
            target=self._main, args=(settings, records, api, namespace), daemon=True
        )
        self.thread.start()

    def _main(self, settings: Settings, records: RecordsStore, api: client.ApiClient, namespace: str) -> None:
        asyncio.set_event_loop(self.loop)
        self.task = self.loop.create_task(
            operator.run(
                settings,
                namespaces=[namespace],
                standalone=True,
                liveness_endpoint=self.liveness_endpoint,
                records=records,
                api=api,
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
