"""Offline checks of the deployment files: helm (unpacked into the venv by `make chart-tools`), shellcheck
(Debian), kubernetes-validate (the Kubernetes API's own schemas) and the product's settings."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import services_required

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "training-agent"
MODES = {
    "defaults": [],
    "namespace": [CHART / "ci" / "namespace-values.yaml"],
    "cluster": [CHART / "ci" / "cluster-values.yaml"],
    "kind-dev": [REPO / "deploy" / "kind" / "values-dev.yaml"],
}
RELEASE, NAMESPACE = "ta", "automl"


def find_tool(name: str) -> str:
    """The tool in the venv's bin/ or on PATH; a skip, or under CI a failure, when it is missing."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed (make chart-tools / make system-deps install it)"
    if services_required():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def helm() -> str:
    return find_tool("helm")


@dataclass
class Rendered:
    objects: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name_suffix: str) -> dict[str, Any]:
        [found] = [o for o in self.of_kind(kind) if o["metadata"]["name"].endswith(name_suffix)]
        return found

    def pod_specs(self) -> dict[str, dict[str, Any]]:
        return {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in self.of_kind("Deployment")}


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, check=False)


def values_args(mode: str) -> list[str]:
    """helm's `-f FILE` arguments for `mode`."""
    return [arg for values in MODES[mode] for arg in ("-f", str(values))]


def template_args(mode: str, kube_version: str, extra: tuple[str, ...] = ()) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", kube_version]
    return [*args, *values_args(mode), *extra]


def render(helm: str, mode: str, kube_version: str = "1.29.0", *extra: str) -> Rendered:
    done = run_helm(helm, *template_args(mode, kube_version, extra))
    assert done.returncode == 0, done.stderr
    return Rendered([o for o in yaml.safe_load_all(done.stdout) if o])
