"""Trainer processes by pid: is this pid still a project's trainer, signal it, wait for it to go.

Used for trainers that are not this server's children (adopted after a restart, or started by hand with the
CLI): they cannot be waited for, only checked — and a pid can be recycled by another program, so every check
also reads the process's command line.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from uuid import UUID

logger = logging.getLogger(__name__)

_POLL_S = 0.1


def pid_runs_project(pid: int, project_id: UUID) -> bool:
    """Whether `pid` is alive and is the trainer of `project_id` (not a recycled pid of another program,
    not a zombie that already exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else: check its command line below
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            return str(project_id).encode() in cmdline.read_bytes()
        except OSError:
            return False
    return True  # no /proc (not Linux): trust the pid


def signal_trainer(pid: int, project_id: UUID, sig: signal.Signals) -> bool:
    """Send `sig` to `pid` only while it is `project_id`'s trainer; returns whether it was sent."""
    if not pid_runs_project(pid, project_id):
        return False
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError) as exc:
        logger.warning(
            "Could not send %s to the trainer of project %s (pid %d): %s", sig.name, project_id, pid, exc
        )
        return False
    return True


def wait_gone(pid: int, project_id: UUID, timeout_s: float) -> bool:
    """Wait (bounded) until `pid` is no longer `project_id`'s trainer; returns whether it is gone."""
    deadline = time.monotonic() + timeout_s
    while pid_runs_project(pid, project_id):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
    return True
