"""The processes of one run under torchrun, and the few collectives the trainer needs between them.

torchrun (one pod with several GPUs, or several nodes: see controller/distributed.py; `--nproc-per-node` on a
workstation) starts one trainer per GPU and node and tells each its place through RANK, LOCAL_RANK,
WORLD_SIZE and GROUP_RANK. Global rank 0 leads: it alone claims the project, reads the dataset's records,
writes logs, checkpoints and the model (pipeline.py); the other ranks follow (follower.py) and only train.

Gradients travel through DDP on the default group (NCCL on GPUs, gloo on CPUs). Everything else —
the plan rank 0 hands over, "stop now" flags, metric sums, per-rank RNG states — goes through a gloo group
of CPU objects, so a flag checked every step never waits on a GPU stream.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from training_agent.core.errors import EXIT_FAILED
from training_agent.trainer.placement import Place

PR_SET_PDEATHSIG = 1  # linux/prctl.h


class Group:
    """Collectives over the run's processes; for a lone process each returns its own value."""

    def __init__(self, where: Place, control: Any = None) -> None:
        self.place = where
        self._control = control  # the gloo group for CPU objects (None: a lone process)

    @property
    def rank(self) -> int:
        return self.place.rank

    @property
    def world_size(self) -> int:
        return self.place.world_size

    @property
    def leads(self) -> bool:
        return self.place.leads

    @property
    def distributed(self) -> bool:
        return self.place.distributed

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one: all stop at the same step, or none does."""
        return self.sum([1.0 if flag else 0.0])[0] > 0

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over the ranks (float64: image counts stay exact)."""
        if not self.distributed:
            return list(values)
        total = torch.tensor(list(values), dtype=torch.float64)
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=self._control)
        return total.tolist()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj, group=self._control)
        return gathered

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (what the others pass is ignored)."""
        if not self.distributed:
            return obj
        box = [obj if self.leads else None]
        dist.broadcast_object_list(box, src=0, group=self._control)
        return box[0]


SOLO = Group(Place())


def join(where: Place, device: torch.device, timeout_s: float) -> Group:
    """Join the run's process group (torchrun's env:// rendezvous; a lone process has none: `SOLO`).
    `timeout_s` bounds every collective, the longest being the followers' wait while rank 0 downloads and
    checks the dataset."""
    timeout = timedelta(seconds=timeout_s)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, timeout=timeout)
    control = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else dist.group.WORLD
    return Group(where, control)


def die_with_launcher() -> None:
    """Under torchrun: end when the torchrun agent ends. torchrun starts its workers in sessions of their
    own, so a SIGKILL of the agent (a local executor's stop after its grace period, a killed demo) would
    leave them training on, and writing, without it; the kernel kills them instead (Linux's parent-death
    signal). A pod's end needs none of this: the container takes every process with it."""
    if not sys.platform.startswith("linux") or "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    launcher = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != launcher:  # it died before the signal was set up
        os._exit(EXIT_FAILED)


def leave(group: Group) -> None:
    if group.distributed and dist.is_initialized():
        dist.destroy_process_group()
