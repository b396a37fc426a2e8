"""The chart's values for many GPUs and many nodes: trainer.gpus, trainer.nodes, trainer.workload and
trainer.successPolicy reach the settings, the settings make the Indexed Job + Service or the JobSet, the
controller's RBAC allows exactly what that needs, and the schema refuses what the CRD would."""

from __future__ import annotations

import os
from typing import Any
from unittest import mock

import pytest

from tests.deploy.conftest import Rendered, render, run_helm, template_args
from tests.deploy.test_chart import NEWEST, OLDEST, PROJECT, validate_object
from training_agent.api.executors.kubernetes import spec_for
from training_agent.controller.manifests import build_objects
from training_agent.core.runs import run_name
from training_agent.core.settings import Settings


def _objects(rendered: Rendered) -> list[dict[str, Any]]:
    """What the controller would create for a run the API creates, with the settings the chart renders."""
    with mock.patch.dict(os.environ, rendered.get("ConfigMap", "-config")["data"]):
        settings = Settings()
    return build_objects(run_name(PROJECT), settings.namespace, spec_for(PROJECT, {}, settings))


def _controller_rules(rendered: Rendered, kind: str = "Role") -> dict[tuple[str, str], set[str]]:
    return {
        (group, resource): set(rule["verbs"])
        for rule in rendered.get(kind, "-controller")["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }


def test_defaults_are_one_node_and_allow_services_not_jobsets(helm: str) -> None:
    rendered = render(helm, "defaults")
    data = rendered.get("ConfigMap", "-config")["data"]
    assert (data["TRAINING_AGENT_TRAINER_NODES"], data["TRAINING_AGENT_TRAINER_WORKLOAD"]) == ("1", "job")
    assert data["TRAINING_AGENT_TRAINER_SUCCESS_POLICY"] == "all"
    [job] = _objects(rendered)
    assert job["kind"] == "Job" and "completionMode" not in job["spec"]
    rules = _controller_rules(rendered)
    assert rules[("", "services")] == {"get", "create", "delete"}  # no list or watch: nothing to follow
    assert ("jobset.x-k8s.io", "jobsets") not in rules


def test_several_nodes_make_a_valid_indexed_job_and_service(helm: str) -> None:
    rendered = render(
        helm, "namespace", NEWEST, "--set", "trainer.nodes=2", "--set", "trainer.gpus=4", "--set",
        "trainer.successPolicy=leader",
    )  # fmt: skip
    service, job = _objects(rendered)
    for obj in (service, job):
        validate_object(obj, NEWEST)
        assert obj["metadata"]["namespace"] == "ml-runs"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 2
    assert job["spec"]["successPolicy"] == {"rules": [{"succeededIndexes": "0"}]}
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert job["spec"]["suspend"] is True  # namespace mode queues in Kueue: the whole group, one workload


@pytest.mark.parametrize("mode,kind", [("namespace", "Role"), ("cluster", "ClusterRole")])
def test_jobset_workload_makes_a_jobset_and_allows_it(helm: str, mode: str, kind: str) -> None:
    rendered = render(helm, mode, NEWEST, "--set", "trainer.nodes=3", "--set", "trainer.workload=jobset")
    [jobset] = _objects(rendered)
    assert jobset["kind"] == "JobSet"
    assert jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["completions"] == 3
    rules = _controller_rules(rendered, kind)
    assert rules[("jobset.x-k8s.io", "jobsets")] == {"get", "list", "watch", "create", "delete"}


BAD = {
    "zero nodes": "trainer.nodes=0",
    "too many nodes": "trainer.nodes=65",
    "more gpus than a node has": "trainer.gpus=17",
    "unknown workload": "trainer.workload=pytorchjob",
    "unknown success policy": "trainer.successPolicy=any",
}


@pytest.mark.parametrize("case", list(BAD), ids=lambda c: c.replace(" ", "-"))
def test_bad_values_are_refused(helm: str, case: str) -> None:
    done = run_helm(helm, *template_args("defaults", OLDEST, ("--set", BAD[case])))
    assert done.returncode != 0, f"accepted: {BAD[case]}"
    assert "values don't meet the specifications of the schema" in done.stderr, done.stderr
