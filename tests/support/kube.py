"""kmock with what an apiserver adds on creation (uid, resourceVersion, creationTimestamp), which the
emulator leaves out: kopf's JSON patches test resourceVersion, and owner references carry the uid.
Test-only; the product never sees this class."""

from __future__ import annotations

import datetime
import itertools
import uuid
from typing import Any

import aiohttp.web
import kmock
from kmock._internal import enums, rendering

_versions = itertools.count(1)


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
        return await super()._handle(request)
