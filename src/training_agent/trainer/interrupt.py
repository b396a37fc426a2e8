"""SIGTERM → a stop the trainer can honour without losing work.

Kubernetes sends SIGTERM on preemption, eviction or a node drain, then SIGKILL after the grace period. In the
training loop the signal only sets a flag: the loop finishes its step, writes a checkpoint and stops. Anywhere
else (downloading, extracting, uploading) there is nothing worth saving, so it interrupts at once. Either way
the trainer exits with EXIT_RETRY and leaves the project `training` for the next attempt.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from training_agent.core.errors import Interrupted

logger = logging.getLogger(__name__)


class StopSignal:
    def __init__(self) -> None:
        self.requested = False
        self._deferred = False
        self._ignored = False

    def install(self) -> None:
        """Handle SIGTERM in this (the main) thread."""
        signal.signal(signal.SIGTERM, self._handle)

    def request(self) -> None:
        """Ask for a stop, as SIGTERM does."""
        self.requested = True
        if not self._deferred:
            raise Interrupted("Stopped by SIGTERM")
        logger.warning("SIGTERM: finishing this step, then checkpointing and stopping")

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self._ignored:
            logger.info("SIGTERM after the run recorded its result: finishing the clean-up, then exiting")
            return
        self.request()

    def request_soon(self) -> None:
        """Ask for a stop from another thread: the training loop and the next stage boundary honour it."""
        self.requested = True

    def check(self) -> None:
        """At a stage boundary: stop now if a stop was asked for."""
        if self.requested and not self._ignored:
            raise Interrupted("Stopped on request between two steps")

    def ignore(self) -> None:
        """The run's outcome is recorded: a late SIGTERM (a server shutting down) must not interrupt the
        clean-up and must not be logged as an interruption."""
        self._ignored = True

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Within this block a stop only sets `requested`; the training loop polls it."""
        if self.requested:
            raise Interrupted("Stopped by SIGTERM")
        self._deferred = True
        try:
            yield
        finally:
            self._deferred = False
