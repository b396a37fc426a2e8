"""Run the trainer as a child process: how the demo and the API's local executor start a run."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from uuid import UUID

from training_agent.core.settings import Settings, compute_threads, cpu_count, env_name


def trainer_command(project_id: UUID, *, claimed: bool, processes: int = 1) -> list[str]:
    """The command a worker runs; the same one a Kubernetes Job's container runs. Several processes:
    torchrun starts them on this machine, each training its share (gloo on a CPU, NCCL on GPUs)."""
    launcher = [sys.executable, "-m"]
    if processes > 1:
        # torchrun with the trainer's exit code as its own (trainer/launch.py): 75 is still a retry.
        launcher += ["training_agent", "torchrun", "--standalone", "--nproc-per-node", str(processes), "-m"]
    # No progress bar: a server's (or the demo's) trainers share its terminal, and would draw over it.
    command = [
        *launcher,
        "training_agent",
        "train",
        "--project-id",
        str(project_id),
        "--no-progress-bar",
    ]
    if claimed:
        command.append("--claimed")
    return command


def start_trainer(
    project_id: UUID, *, claimed: bool, env: Mapping[str, str] | None = None, processes: int = 1
) -> subprocess.Popen[bytes]:
    """Start the trainer for `project_id`; its log goes to this process's stderr."""
    return subprocess.Popen(
        trainer_command(project_id, claimed=claimed, processes=processes),
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        stdout=sys.stderr.fileno(),
        stderr=sys.stderr.fileno(),
        # Its own session: a Ctrl-C at the terminal reaches the demo or server only, which then stops the
        # trainer with SIGTERM (checkpoint, clean exit) instead of a KeyboardInterrupt mid-import.
        start_new_session=True,
    )


def trainer_env(
    settings: Settings, base: Mapping[str, str], *, concurrent_runs: int, cpus: int | None = None
) -> dict[str, str]:
    """The environment of a trainer that runs beside up to `concurrent_runs - 1` others on this machine.

    Each trainer would otherwise compute on every CPU it sees (trainer/threads.py), and torch's threads spin
    while they wait, so trainers side by side slow each other down far more than their share; each gets
    its share of the CPUs instead, divided again among its own processes. A thread count the operator set
    (`TRAINING_AGENT_CPU_THREADS`, or `OMP_NUM_THREADS` in `base`) is kept as it is."""
    env = {**base, **settings.to_env()}
    if concurrent_runs > 1:
        run_cpus = (cpus if cpus is not None else cpu_count()) // concurrent_runs
        threads = compute_threads(settings.cpu_threads, base, run_cpus, settings.local_nproc_per_node)
        if threads is not None:
            env[env_name("cpu_threads")] = str(threads)
    return env
