"""The environment the local executor gives each trainer: its share of the machine's CPUs."""

from __future__ import annotations

import pytest

from training_agent.core.settings import Settings
from training_agent.core.trainer_process import trainer_env

THREADS = "TRAINING_AGENT_CPU_THREADS"


def _settings(**values: object) -> Settings:
    return Settings(**values)  # type: ignore[arg-type]


def test_a_lone_trainer_keeps_the_automatic_choice() -> None:
    env = trainer_env(_settings(), {}, concurrent_runs=1, cpus=16)
    assert env[THREADS] == "0"


@pytest.mark.parametrize(
    ("runs", "processes", "cpus", "share"),
    [(2, 1, 16, "8"), (4, 1, 16, "4"), (2, 2, 16, "4"), (3, 1, 16, "5"), (8, 1, 2, "1")],
)
def test_trainers_side_by_side_share_the_cpus(runs: int, processes: int, cpus: int, share: str) -> None:
    settings = _settings(local_nproc_per_node=processes)
    env = trainer_env(settings, {"PATH": "/bin"}, concurrent_runs=runs, cpus=cpus)
    assert env[THREADS] == share
    assert env["PATH"] == "/bin"


def test_a_thread_count_the_operator_set_wins() -> None:
    assert trainer_env(_settings(cpu_threads=3), {}, concurrent_runs=4, cpus=16)[THREADS] == "3"
    env = trainer_env(_settings(), {"OMP_NUM_THREADS": "6"}, concurrent_runs=4, cpus=16)
    assert env[THREADS] == "0"
    assert env["OMP_NUM_THREADS"] == "6"
