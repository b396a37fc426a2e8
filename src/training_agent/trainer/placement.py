"""Where this process stands in a torchrun launch, read from the environment torchrun sets (torch-free, so
that `training-agent train` can know before importing torch whether it runs alone)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Place:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    node_rank: int = 0  # torchrun's GROUP_RANK: which agent (node) started this process
    nodes: int = 1

    @property
    def leads(self) -> bool:
        """Whether this process leads the run (rank 0; every process outside torchrun)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def local_processes(self) -> int:
        """The run's processes on this node (torchrun starts as many on every node)."""
        return max(1, self.world_size // self.nodes)


def place(environ: Mapping[str, str] | None = None) -> Place:
    """This process's place, from torchrun's environment (a lone process when it is absent or malformed:
    a stray RANK must not stop a plain `training-agent train`)."""
    env = os.environ if environ is None else environ
    try:
        world_size = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", "0"))
        local_world = int(env.get("LOCAL_WORLD_SIZE", str(world_size)))
        node_rank = int(env.get("GROUP_RANK", "0"))
        nodes = int(env.get("GROUP_WORLD_SIZE", str(max(world_size // max(local_world, 1), 1))))
    except ValueError:
        return Place()
    if world_size <= 1 or not 0 <= rank < world_size:
        return Place()
    return Place(rank, local_rank, world_size, node_rank, max(nodes, 1))
