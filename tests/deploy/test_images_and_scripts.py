"""The Dockerfiles (no Docker engine runs here, so they are read, not built), the control plane's boundary
(no torch), and the shell scripts (shellcheck)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.deploy.conftest import REPO, find_tool

TRAINER = (REPO / "trainer-image" / "Dockerfile").read_text()
CONTROL_PLANE = (REPO / "control-plane-image" / "Dockerfile").read_text()


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    lines = [
        line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")
    ]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _arg_default(dockerfile: str, name: str) -> str:
    [value] = [
        a.split("=", 1)[1] for i, a in _instructions(dockerfile) if i == "ARG" and a.startswith(name + "=")
    ]
    return value


def test_trainer_image() -> None:
    base = _arg_default(TRAINER, "PYTORCH_IMAGE")
    torch_pin = re.search(r"^torch==(\S+)$", (REPO / "constraints.txt").read_text(), re.M)
    assert torch_pin is not None
    # A CUDA runtime PyTorch base, pinned to the same torch as constraints.txt (never :latest).
    assert re.fullmatch(rf"pytorch/pytorch:{re.escape(torch_pin[1])}-cuda[\d.]+-cudnn\d+-runtime", base), base
    steps = _instructions(TRAINER)
    assert ("FROM", "${PYTORCH_IMAGE}") in steps
    assert any(i == "RUN" and '".[trainer]"' in a and "-c constraints.txt" in a for i, a in steps)
    assert any(i == "RUN" and "training-agent fetch-weights ${PRETRAINED_MODELS}" in a for i, a in steps)
    assert ("USER", "${UID}:${UID}") in steps and _arg_default(TRAINER, "UID") == "1000"
    # The Job's pod runs as this uid (controller/manifests.py).
    from training_agent.controller.manifests import RUN_AS_USER

    assert RUN_AS_USER == 1000
    assert steps[-2] == ("ENTRYPOINT", '["training-agent", "train"]')


def test_control_plane_image() -> None:
    steps = _instructions(CONTROL_PLANE)
    base = _arg_default(CONTROL_PLANE, "PYTHON_IMAGE")
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), base
    installs = [a for i, a in steps if i == "RUN" and "pip install" in a]
    assert installs and not any(re.search(r"pip install[^&]*(trainer|torch)", a) for a in installs)
    uid = _arg_default(CONTROL_PLANE, "UID")
    assert int(uid) >= 10000 and ("USER", "${UID}:${UID}") in steps
    assert ("ENTRYPOINT", '["training-agent"]') in steps


def test_docker_context_keeps_only_what_the_builds_copy() -> None:
    rules = [r for r in (REPO / ".dockerignore").read_text().splitlines() if r and not r.startswith("#")]
    assert rules[0] == "*"  # everything out (venv, caches, tests, .git), then the sources back in
    for dockerfile in (TRAINER, CONTROL_PLANE):
        for instruction, args in _instructions(dockerfile):
            if instruction == "COPY" and not args.startswith("--from"):
                for source in args.split()[:-1]:
                    assert (REPO / source).exists(), source
                    assert f"!{source.rstrip('/')}" in {r.rstrip("/") for r in rules}, source


def test_the_control_plane_runs_without_torch() -> None:
    # The slim image has no torch: the API (kubernetes executor) and the controller must not import it.
    code = (
        "import sys, training_agent.api.main, training_agent.controller.operator, training_agent.cli;"
        "assert 'torch' not in sys.modules and 'torchvision' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "script", ["deploy/kind/quickstart.sh", "scripts/install-system-deps.sh"], ids=lambda s: s.split("/")[-1]
)
def test_shell_scripts_pass_shellcheck(script: str) -> None:
    shellcheck = find_tool("shellcheck")
    done = subprocess.run(
        [shellcheck, "--severity=style", str(REPO / script)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout
