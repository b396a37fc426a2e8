"""Fault injection for the trainer processes the fault suite starts (tests only, never the product).

Python imports `sitecustomize` at start-up from sys.path; the suite puts this folder on the child's
PYTHONPATH with FAULT_AT and FAULT_SIGNAL set, and this module makes the trainer send itself the signal:

- FAULT_AT=<step>: when the run enters that step (`RunContext.enter`: download, extract, validate_dataset,
  build_model, prepare_data, train, evaluate, save, upload, verify, record);
- FAULT_AT=epoch:<n>: right after the n-th epoch's log row, before its checkpoint;
- FAULT_AT=checkpoint:<n>: while the n-th checkpoint is written (the local file is there, the object not);
- FAULT_AT=model_row: right after the `models` row is inserted, before the project's status moves.
"""

from __future__ import annotations

import os
import signal

_AT = os.environ.get("FAULT_AT", "")
_SIGNAL = getattr(signal, "SIG" + os.environ.get("FAULT_SIGNAL", "KILL"))


def _fire() -> None:
    # FAULT_ONCE names a marker file: only the first trainer that gets here fires (a retry runs clean).
    once = os.environ.get("FAULT_ONCE")
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return
    os.kill(os.getpid(), _SIGNAL)


def _install() -> None:
    from typing import Any

    from training_agent.core.logs import AgentLog
    from training_agent.core.records.sqlite import SQLiteRecords
    from training_agent.trainer.owner import RunOwner
    from training_agent.trainer.stages import RunContext

    kind, _, number = _AT.partition(":")
    if kind == "epoch":
        real_info = AgentLog.info

        def info(self: AgentLog, message: str, /, **metadata: Any) -> None:
            real_info(self, message, **metadata)
            if message.startswith(f"Epoch {number}/"):
                _fire()

        setattr(AgentLog, "info", info)  # noqa: B010 - patching the class, on purpose
    elif kind == "checkpoint":
        real_put = RunOwner.put
        count = {"n": 0}

        def put(self: RunOwner, src: Any, url: str, **kwargs: Any) -> Any:
            if "/checkpoints/" in url:
                count["n"] += 1
                if count["n"] == int(number):
                    _fire()
            return real_put(self, src, url, **kwargs)

        setattr(RunOwner, "put", put)  # noqa: B010
    elif kind == "model_row":
        real_insert = SQLiteRecords.insert_model

        def insert_model(self: SQLiteRecords, model: Any) -> Any:
            row = real_insert(self, model)
            _fire()
            return row

        setattr(SQLiteRecords, "insert_model", insert_model)  # noqa: B010
    elif _AT:
        real_enter = RunContext.enter

        def enter(self: RunContext, step: str) -> None:
            if step == _AT:
                _fire()
            real_enter(self, step)

        setattr(RunContext, "enter", enter)  # noqa: B010


if _AT:
    _install()
