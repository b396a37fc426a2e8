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
    from training_agent.core.records.sqlite import SQLiteRecords
    from training_agent.trainer import checkpoint, stages

    kind, _, number = _AT.partition(":")
    if kind == "epoch":
        from training_agent.core.logs import AgentLog

        real_info = AgentLog.info

        def info(self, message, **metadata):  # type: ignore[no-untyped-def]
            real_info(self, message, **metadata)
            if message.startswith(f"Epoch {number}/"):
                _fire()

        AgentLog.info = info  # type: ignore[method-assign]
    elif kind == "checkpoint":
        real_put = checkpoint.RunOwner.put
        count = {"n": 0}

        def put(self, src, url, **kwargs):  # type: ignore[no-untyped-def]
            if "/checkpoints/" in url:
                count["n"] += 1
                if count["n"] == int(number):
                    _fire()
            return real_put(self, src, url, **kwargs)

        checkpoint.RunOwner.put = put  # type: ignore[method-assign]
    elif kind == "model_row":
        real_insert = SQLiteRecords.insert_model

        def insert_model(self, model):  # type: ignore[no-untyped-def]
            row = real_insert(self, model)
            _fire()
            return row

        SQLiteRecords.insert_model = insert_model  # type: ignore[method-assign]
    elif _AT:
        real_enter = stages.RunContext.enter

        def enter(self, step):  # type: ignore[no-untyped-def]
            if step == _AT:
                _fire()
            real_enter(self, step)

        stages.RunContext.enter = enter  # type: ignore[method-assign]


if _AT:
    _install()
