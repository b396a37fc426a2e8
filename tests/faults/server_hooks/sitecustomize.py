"""Fault injection for the API server processes of the fault suite (tests only, never the product).

tests/faults/test_server_faults.py (and the kubernetes cases) start `training-agent serve` with this folder on
its PYTHONPATH and SERVER_FAULT_AT set; Python imports `sitecustomize` at start-up, and this module makes the
server SIGKILL itself at that point of a start or a cancel:

- claimed: the start's compare-and-set moved the project `pending_training` → `training` (the run record is
  written), nothing else yet;
- initiated: the "Training initiated" row is in `agent_logs`, the run not yet handed to the executor;
- spawned: the local executor started the trainer child, its pid not yet in the run record;
- cancel_failed: a cancel failed the project as cancelled, its trainer not yet signalled.

The variable is taken out of the environment at once: the trainers the server starts inherit its environment
(and this PYTHONPATH), and must run without a fault.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

_AT = os.environ.pop("SERVER_FAULT_AT", "")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_after(owner: Any, name: str, fires: Callable[..., bool]) -> None:
    """Wrap `owner.name`: call it, then die if `fires(result, *args, **kwargs)`."""
    real = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        if fires(result, *args, **kwargs):
            _die()
        return result

    setattr(owner, name, wrapped)


def _claimed(result: Any, _self: Any, _project_id: Any, **kwargs: Any) -> bool:
    return result is not None and (kwargs.get("from_status"), kwargs.get("to_status")) == (
        "pending_training",
        "training",
    )


def _initiated(
    _result: Any, _self: Any, _project_id: Any, _agent: Any, _level: Any, message: str, *_: Any
) -> bool:
    return message == "Training initiated"


def _cancelled(result: Any, *_args: Any, **kwargs: Any) -> bool:
    return bool(result) and kwargs.get("error_type") == "Cancelled"


def _install() -> None:
    from training_agent.api.executors import local
    from training_agent.core.records.sqlite import SQLiteRecords

    points: dict[str, Callable[[], None]] = {
        "claimed": lambda: _kill_after(SQLiteRecords, "transition_project", _claimed),
        "initiated": lambda: _kill_after(SQLiteRecords, "insert_log", _initiated),
        "spawned": lambda: _kill_after(local, "start_trainer", lambda *_a, **_k: True),
        "cancel_failed": lambda: _kill_after(local, "fail_run", _cancelled),
    }
    points[_AT]()


if _AT:
    _install()
