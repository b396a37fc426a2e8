"""The trainer's lease: a background thread that writes `heartbeat_at` into the run record every few
seconds, so that the API server or the controller can tell a live run from one whose trainer died.

When the record stops being this run's (cancelled, reaped, started anew), the heartbeat asks the trainer to
stop: a trainer nobody waits for any more must not go on holding a GPU.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from uuid import UUID

from training_agent.core.lease import update_run
from training_agent.core.records import RecordsStore
from training_agent.core.records.models import utcnow

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
    ) -> None:
        self.records = records
        self.project_id = project_id
        self.run_id = run_id
        self.interval_s = interval_s
        self.attempt = attempt
        self.on_lost = on_lost
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"heartbeat-{project_id}")

    def beat(self) -> bool:
        """Renew the lease once; False when the run record is no longer this run's."""
        moved = update_run(
            self.records,
            self.project_id,
            self.run_id,
            heartbeat_at=utcnow().isoformat(),
            attempt=self.attempt,
            pid=os.getpid(),
            host=socket.gethostname(),
        )
        return moved is not None

    def start(self) -> None:
        self.beat()  # the lease exists before any slow step begins
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval_s + 5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
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
