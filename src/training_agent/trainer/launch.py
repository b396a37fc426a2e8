"""`training-agent torchrun [torchrun options] -m training_agent train ...`: PyTorch's own launcher, with the
run's exit code as its own.

torchrun exits 1 whenever a worker fails, whatever the worker's exit code. The trainer's codes carry
meaning for whoever runs it: 75 (EXIT_RETRY: stopped by SIGTERM after a checkpoint) is a retry that the
Job's podFailurePolicy does not count and the local executor restarts; 2 and 3 (bad configuration, invalid
input) fail the Job at once. This runs torchrun itself (`torch.distributed.run`, the same parser and
elastic agent) and only translates how it ends: rank 0's exit code when rank 0 failed (it owns the run's
outcome), else the first failed rank's; a SIGTERM to the launcher (preemption, a stop) is a retry, as it is
for one trainer — torchrun passed the signal to every rank, and rank 0 checkpointed.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from typing import Protocol

from training_agent.core.errors import EXIT_RETRY


class Failure(Protocol):
    exitcode: int


def exit_code_of(failures: Mapping[int, Failure]) -> int:
    """The exit code a torchrun launch reports for these failed ranks (global rank → failure)."""
    if not failures:
        return 1
    failure = failures.get(0) or failures[min(failures)]
    code = int(failure.exitcode)
    return code if code > 0 else 128 + abs(code)  # killed by signal N: 128 + N, as shells report it


def torchrun(argv: Sequence[str]) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(list(argv)))  # type: ignore[no-untyped-call]
    except ChildFailedError as exc:
        return exit_code_of(exc.failures)
    except SignalException as exc:
        return EXIT_RETRY if exc.sigval == signal.SIGTERM else 128 + int(exc.sigval)
    return 0
