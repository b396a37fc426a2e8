"""Run blocking records and storage calls off the event loop, a few at a time.

The stores are synchronous (sqlite3, supabase-py's sync client). With one worker thread per concurrent
request, 32 concurrent status requests ran 32 threads fighting over the GIL and the SQLite file and served
fewer requests than 2 threads did (benchmarks/api_load.py: 507 vs 733 requests/s), so these calls share a
small pool: 2 threads for the embedded SQLite file, more for Supabase, whose calls wait on the network
(TRAINING_AGENT_API_THREADS overrides).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import ParamSpec, TypeVar

import anyio
import anyio.to_thread

P = ParamSpec("P")
T = TypeVar("T")

_LIMITER: anyio.CapacityLimiter | None = None
_max_threads = 2


def set_max_threads(count: int) -> None:
    global _max_threads  # noqa: PLW0603 - one pool per process, like the thread pool it stands in for
    _max_threads = count
    if _LIMITER is not None:
        _LIMITER.total_tokens = count


def _limiter() -> anyio.CapacityLimiter:
    # Created lazily: a CapacityLimiter binds to the running event loop's backend.
    global _LIMITER  # noqa: PLW0603
    if _LIMITER is None:
        _LIMITER = anyio.CapacityLimiter(_max_threads)
    return _LIMITER


async def run_blocking(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    return await anyio.to_thread.run_sync(partial(func, *args, **kwargs), limiter=_limiter())
