"""Run the trainer as a child process: how the demo and the API's local executor start a run."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from uuid import UUID


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
