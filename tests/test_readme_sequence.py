"""The README's "Projects CLI" walk-through, run as written: `training-agent serve` in one process, and the
lines of "terminal 2" (projects create, curl start, curl status, projects logs --follow) through bash, with
the real `training-agent` command and curl, on the embedded store. The only change is the port: a free one
instead of 8000."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import httpx
import pytest

from tests.support.datasets import DatasetFactory
from tests.support.postgres import free_port
from tests.support.services import unavailable
from training_agent.core.records.sqlite import SQLiteRecords

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- projects-cli-walkthrough: tests/test_readme_sequence.py runs this block -->"


def walkthrough() -> tuple[str, list[str]]:
    """The README block after MARKER: its serve command, and the other lines (comments dropped)."""
    text = README.read_text()
    assert MARKER in text, "the README lost the projects CLI walk-through"
    block = text.split(MARKER, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [line.split("  #")[0].rstrip() for line in block.splitlines() if not line.startswith("#")]
    lines = [line for line in lines if line]
    serve = [line for line in lines if line.startswith("training-agent serve")]
    assert len(serve) == 1, lines
    return serve[0], [line for line in lines if line != serve[0]]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "TRAINING_AGENT_WORK_DIR": str(tmp_path / "work"),
        "TRAINING_AGENT_NUM_WORKERS": "0",
        "TRAINING_AGENT_DEVICE": "cpu",
    }


@pytest.fixture
def server(tmp_path: Path, env: dict[str, str]) -> Iterator[int]:
    """The walk-through's `training-agent serve`, on a free port, until the test ends."""
    command, _ = walkthrough()
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        cwd=tmp_path,
        env={**env, "TRAINING_AGENT_API_PORT": str(port)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the API did not start within 60 s"
            time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


def test_the_readme_walkthrough_trains_a_project(
    tmp_path: Path, env: dict[str, str], server: int, datasets: DatasetFactory
) -> None:
    if shutil.which("curl") is None:
        unavailable("curl is not installed (scripts/install-system-deps.sh)")
    _, lines = walkthrough()
    dataset = re.search(r"--dataset (\S+)", " ".join(lines))
    assert dataset is not None
    shutil.copy(datasets.shapes(), tmp_path / dataset.group(1))
    script = "\n".join(["set -euo pipefail", *lines, 'echo "ID=$ID"']).replace(
        "localhost:8000", f"localhost:{server}"
    )
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    project_id = done.stdout.strip().splitlines()[-1].removeprefix("ID=")
    # curl start, then curl status: one JSON answer each (curl -s adds no newline), then the log lines.
    decoder, answers, at = json.JSONDecoder(), [], 0
    for _ in range(2):
        answer, at = decoder.raw_decode(done.stdout, at)
        answers.append(answer)
        at += len(done.stdout[at:]) - len(done.stdout[at:].lstrip())
    assert answers[0]["project_id"] == project_id and answers[0]["status"] == "training"
    assert answers[1]["project_id"] == project_id
    records = SQLiteRecords(tmp_path / ".training-agent" / "records.db")
    project = records.get_project(UUID(project_id))
    assert project is not None and project.status == "pending_evaluation"
    assert len(records.list_models(project.id)) == 1
    # projects logs --follow: every row of the run, from the start's to the last one written after the
    # project moved on, in order; then it stopped by itself.
    printed = done.stdout[at:].splitlines()[:-1]  # the last line is the script's ID=
    rows = list(reversed(records.recent_logs(project.id, limit=500)))
    assert any("Training initiated" in row.message for row in rows[:3])
    assert [line.split(None, 3)[3] for line in printed] == [row.message for row in rows]
    assert done.stderr.strip().splitlines()[-1] == f"project {project_id}: pending_evaluation"
