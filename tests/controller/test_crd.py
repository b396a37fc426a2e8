"""The CRD: one source file, a structural schema that accepts what the API writes and refuses bad specs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any
from uuid import uuid4

import jsonschema
import pytest
import yaml

from tests.conftest import make_settings
from tests.support.kube import CRD_FILE
from training_agent.api.executors.kubernetes import spec_for
from training_agent.controller.progress import run_progress
from training_agent.core.records.models import utcnow
from training_agent.core.runs import Progress, StepProgress
from training_agent.core.trainingrun import GROUP, KIND, PLURAL, VERSION, trainingrun_manifest

CRD = yaml.safe_load(CRD_FILE.read_text())
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def validate(obj: dict[str, Any]) -> None:
    # Kubernetes structural schemas are OpenAPI v3.0 (JSON Schema draft 4 keywords, boolean exclusiveMinimum).
    jsonschema.Draft4Validator(SCHEMA).validate({k: v for k, v in obj.items() if k in ("spec", "status")})


def test_names_and_printer_columns() -> None:
    assert CRD["metadata"]["name"] == f"{PLURAL}.{GROUP}"
    assert CRD["spec"]["names"]["kind"] == KIND and CRD["spec"]["names"]["shortNames"] == ["tr"]
    version = CRD["spec"]["versions"][0]
    assert version["name"] == VERSION and version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Project",
        "Model",
        "GPUs",
        "Nodes",
        "Phase",
        "Progress",
        "ETA",
        "Val-Acc",
        "Age",
    ]
    jsonschema.Draft4Validator.check_schema(SCHEMA)


def test_progress_columns_read_what_the_controller_writes() -> None:
    """Progress ("e3/10 45%") and ETA ("4m05s") point at fields the schema keeps (a real API server prunes
    unknown ones), filled by the controller's own function."""
    live = StepProgress(
        epoch=3, epochs=10, step=45, steps=100, images=1440, eta_seconds=245.0, updated_at=utcnow()
    )
    progress = run_progress(Progress(epoch=2, total_epochs=10, val_accuracy=0.8), live, finished=False)
    columns = {c["name"]: c for c in CRD["spec"]["versions"][0]["additionalPrinterColumns"]}
    shown = {}
    for name in ("Progress", "ETA"):
        column = columns[name]
        assert column["type"] == "string"
        field = column["jsonPath"].removeprefix(".status.progress.")
        assert field in SCHEMA["properties"]["status"]["properties"]["progress"]["properties"]
        shown[name] = progress[field]
    assert shown == {"Progress": "e3/10 45%", "ETA": "4m05s"}
    validate({"spec": copy.deepcopy(VALID), "status": {"phase": "Running", "progress": progress}})


def test_what_the_api_writes_is_valid(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        trainer_node_selector={"gpu": "a100"},
        trainer_queue_name="q",
        trainer_env_configmap="trainer-env",
        trainer_resources={"requests": {"cpu": "4", "memory": "16Gi"}},
        trainer_tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    )
    body = trainingrun_manifest(
        spec_for(uuid4(), {"epochs": 3, "learning_rate": 0.01, "preferred_model": "vit_b_16"}, settings), "ml"
    )
    validate(body)
    assert body["spec"]["envConfigMapName"] == "trainer-env"
    assert body["spec"]["resources"] == {"requests": {"cpu": "4", "memory": "16Gi"}}
    status = {
        "phase": "Running",
        "progress": {"epoch": 1, "totalEpochs": 3, "epochText": "1/3", "valAccuracy": 0.5},
        "conditions": [{"type": "Running", "status": "True", "reason": "Running"}],
    }
    validate({**body, "status": status})


VALID = {"projectId": "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f", "image": "trainer:1"}
INVALID = {
    "missing projectId": {"image": "trainer:1"},
    "project id not a uuid": {**VALID, "projectId": "abc"},
    "missing image": {"projectId": VALID["projectId"]},
    "zero epochs": {**VALID, "epochs": 0},
    "negative gpus": {**VALID, "gpus": -1},
    "more gpus than a node has": {**VALID, "gpus": 17},
    "zero nodes": {**VALID, "nodes": 0},
    "too many nodes": {**VALID, "nodes": 65},
    "unknown workload": {**VALID, "workload": "Pod"},
    "unknown success policy": {**VALID, "successPolicy": "Any"},
    "zero learning rate": {**VALID, "learningRate": 0},
    "bad pull policy": {**VALID, "imagePullPolicy": "Sometimes"},
    "node selector not strings": {**VALID, "nodeSelector": {"gpu": 1}},
}


@pytest.mark.parametrize("case", list(INVALID), ids=lambda c: c.replace(" ", "-"))
def test_invalid_specs_are_refused(case: str) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate({"spec": INVALID[case]})


def test_invalid_status_phase_is_refused() -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate({"spec": copy.deepcopy(VALID), "status": {"phase": "Exploded"}})


def test_gpus_and_nodes_from_the_settings_reach_the_spec_and_the_columns(tmp_path: Path) -> None:
    """The API writes the cluster's GPU and node counts (settings, not project metadata: a project chooses
    training options, never resources); the GPUs and Nodes columns read them, and the controller's
    status.workers is kept by the schema."""
    settings = make_settings(
        tmp_path, trainer_gpus=8, trainer_nodes=4, trainer_workload="jobset", trainer_success_policy="leader"
    )
    body = trainingrun_manifest(spec_for(uuid4(), {"gpus": 2, "nodes": 9}, settings), "ml")
    assert {k: body["spec"][k] for k in ("gpus", "nodes", "workload", "successPolicy")} == {
        "gpus": 8,
        "nodes": 4,
        "workload": "JobSet",
        "successPolicy": "Leader",
    }
    columns = {c["name"]: c for c in CRD["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert (columns["GPUs"]["jsonPath"], columns["Nodes"]["jsonPath"]) == (".spec.gpus", ".spec.nodes")
    spec_schema = SCHEMA["properties"]["spec"]["properties"]
    assert (spec_schema["gpus"]["minimum"], spec_schema["gpus"]["maximum"]) == (0, 16)
    assert (spec_schema["nodes"]["minimum"], spec_schema["nodes"]["maximum"]) == (1, 64)
    workers = [
        {"index": 0, "pod": "tr-x-0-abcde", "phase": "Running", "attempts": 1},
        {
            "index": 1,
            "pod": "tr-x-1-fghij",
            "phase": "Failed",
            "attempts": 3,
            "reason": "Error",
            "exitCode": 1,
        },
    ]
    validate({**body, "status": {"phase": "Running", "workers": workers}})
    item = SCHEMA["properties"]["status"]["properties"]["workers"]["items"]["properties"]
    assert set(item) == {k for w in workers for k in w}  # every field the controller writes is kept
