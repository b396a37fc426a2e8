"""Which process of a torchrun launch this trainer is.

torchrun (one pod with several GPUs, or several nodes: see controller/distributed.py) starts one trainer per
GPU and node and tells each its place through RANK, LOCAL_RANK and WORLD_SIZE. The trainer does not yet
train data-parallel, so only global rank 0 may run: it owns the run's records, objects and lease, and any
other rank that ran too would claim the same project and publish a second model. The other ranks leave at
once and cleanly (exit 0), which keeps torchrun and the Job waiting on rank 0 alone: the run trains on one
GPU, as it did before torchrun was used.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Place:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def trains(self) -> bool:
        """Whether this process runs the training (rank 0; every process outside torchrun)."""
        return self.rank == 0


def place(environ: Mapping[str, str] | None = None) -> Place:
    """This process's place, from torchrun's environment (a lone process when it is absent or malformed:
    a stray RANK must not stop a plain `training-agent train`)."""
    env = os.environ if environ is None else environ
    try:
        world_size = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", "0"))
    except ValueError:
        return Place()
    if world_size <= 1 or not 0 <= rank < world_size:
        return Place()
    return Place(rank=rank, local_rank=local_rank, world_size=world_size)
