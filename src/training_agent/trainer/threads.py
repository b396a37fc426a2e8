"""How many threads torch computes with in a trainer process.

torch starts one compute thread per core it sees, and its threads spin-wait for each other at every
operation. In a pod with a CPU limit it sees every core of the node, and beside other busy processes it sees
cores it does not get: on a 2-core machine with one core busy, a 200-step run of a small model took 190 s
instead of 18 s. So a trainer computes on the CPUs it may use (its cgroup quota included), shared by the
trainer processes of its machine; `TRAINING_AGENT_CPU_THREADS` or `OMP_NUM_THREADS` overrides that.
"""

from __future__ import annotations

import logging
import os

import torch

from training_agent.core.settings import compute_threads, cpu_count

logger = logging.getLogger(__name__)


def set_compute_threads(setting: int, local_processes: int) -> int:
    """Apply the choice to this process (one of `local_processes` on its node); returns the threads torch
    computes with."""
    threads = compute_threads(setting, os.environ, cpu_count(), local_processes)
    if threads is not None:
        torch.set_num_threads(threads)
    logger.info("torch computes on %d CPU threads", torch.get_num_threads())
    return torch.get_num_threads()
