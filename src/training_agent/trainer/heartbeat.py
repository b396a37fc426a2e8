"""The trainer's lease: a background thread that writes `heartbeat_at` into the run record every few
seconds, so that the API server or the controller can tell a live run from one whose trainer died.

When the record stops being this run's (cancelled, reaped, started anew), the heartbeat asks the trainer to
stop: a trainer nobody waits for any more must not go on holding a GPU.

It also carries the training loop's in-epoch progress (`progress.py`) into the record: every
`progress_every_s` while the progress moves, so a status request sees steps advance within an epoch, but never
once per step (the records store may be Supabase, across a network).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from training_agent.core.lease import update_run
from training_agent.core.records import RecordsStore
from training_agent.core.records.models import utcnow
from training_agent.core.runs import STEP_PROGRESS_KEY

logger = logging.getLogger(__name__)


class Heartbeat:
    def __init__(
        self,
        records: RecordsStore,
        project_id: UUID,
        run_id: str,
        *,
        interval_s: float,
        attempt: int,
        on_lost: Callable[[], None],
        progress: Callable[[], dict[str, Any] | None] | None = None,
        progress_every_s: float | None = None,
    ) -> None:
        self.records = records
        self.project_id = project_id
        self.run_id = run_id
        self.interval_s = interval_s
        self.attempt = attempt
        self.on_lost = on_lost
        self.progress = progress
        # The loop wakes this often; it writes when the lease is due or the progress has moved.
        self.tick_s = min(interval_s, progress_every_s or interval_s) if progress else interval_s
        self._written: dict[str, Any] | None = None  # the progress last written
        self._beaten_at = 0.0
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"heartbeat-{project_id}")

    def beat(self) -> bool:
        """Renew the lease once (with the latest progress); False when the run record is no longer this
        run's."""
        fields: dict[str, Any] = {}
        snapshot = self.progress() if self.progress else None
        if snapshot is not None:
            fields[STEP_PROGRESS_KEY] = snapshot
        moved = update_run(
            self.records,
            self.project_id,
            self.run_id,
            heartbeat_at=utcnow().isoformat(),
            attempt=self.attempt,
            pid=os.getpid(),
            host=socket.gethostname(),
            **fields,
        )
        self._written, self._beaten_at = snapshot, time.monotonic()
        return moved is not None

    def _due(self) -> bool:
        """The lease is due for renewal, or the progress moved since it was last written."""
        if time.monotonic() - self._beaten_at >= self.interval_s:
            return True
        return self.progress is not None and self.progress() != self._written

    def start(self) -> None:
        self.beat()  # the lease exists before any slow step begins
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval_s + 5)

    def _loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            if not self._due():
                continue
            try:
                alive = self.beat()
            except Exception as exc:  # noqa: BLE001 - a records hiccup costs one beat; a lease outlasts several
                logger.warning("Could not renew the run's lease: %s", exc)
                continue
            if not alive and not self._stop.is_set():
                self.lost = True
                logger.warning("The run record is no longer this run's (cancelled or reaped); stopping")
                self.on_lost()
                return
