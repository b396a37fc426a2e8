"""The Helm chart: lint, render in every mode, validate every object against the Kubernetes API schemas of
the oldest supported and newest bundled versions, refuse bad values, and check what the pods get."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any
from unittest import mock
from uuid import UUID

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import (
    CHART,
    MODES,
    NAMESPACE,
    REPO,
    Rendered,
    render,
    run_helm,
    template_args,
    values_args,
)
from training_agent.api.executors.kubernetes import spec_for
from training_agent.controller.manifests import build_job
from training_agent.core.runs import run_name
from training_agent.core.settings import Settings

OLDEST = "1.29.0"
NEWEST = kubernetes_validate.latest_version()
PROJECT = UUID("6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f")
CRDS = {
    (doc["spec"]["group"], doc["spec"]["names"]["kind"]): doc
    for path in sorted((CHART / "crds").glob("*.yaml"))
    for doc in yaml.safe_load_all(path.read_text())
}


def validate_object(obj: dict[str, Any], version: str) -> None:
    """The Kubernetes API's schema for built-in kinds (strict: unknown fields fail); a custom resource is
    checked against its CRD's openAPIV3Schema, as the API server would."""
    group = obj["apiVersion"].split("/")[0]
    crd = CRDS.get((group, obj["kind"]))
    if crd is None:
        kubernetes_validate.validate(obj, version, strict=True)
        return
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    jsonschema.Draft4Validator(schema).validate({k: v for k, v in obj.items() if k in ("spec", "status")})


@pytest.mark.parametrize("mode", list(MODES))
def test_helm_lint(helm: str, mode: str) -> None:
    done = run_helm(helm, "lint", "--strict", str(CHART), *values_args(mode))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
@pytest.mark.parametrize("mode", list(MODES))
def test_every_rendered_object_is_valid(helm: str, mode: str, version: str) -> None:
    rendered = render(helm, mode, version)
    assert len(rendered.objects) >= 14
    for obj in rendered.objects:
        try:
            validate_object(obj, version)
        except kubernetes_validate.ValidationError as exc:  # pragma: no cover - the message is the point
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} for Kubernetes {version}: {exc}")


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_the_crds_are_valid(version: str) -> None:
    for crd in CRDS.values():
        kubernetes_validate.validate(crd, version, strict=True)


def test_the_chart_ships_the_project_s_crds_and_migration() -> None:
    for name in ("trainingruns.automl.dev.yaml", "kopf-peering.yaml"):
        assert (CHART / "crds" / name).read_bytes() == (REPO / "deploy" / "crds" / name).read_bytes(), name
    [migration] = (REPO / "supabase" / "migrations").glob("*.sql")
    assert (CHART / "files" / migration.name).read_bytes() == migration.read_bytes()


BAD_VALUES = {
    "unknown top-level key": ("--set", "replicas=3"),
    "misspelt nested key": ("--set", "trainer.gpu=2"),
    "negative GPU count": ("--set", "trainer.gpus=-1"),
    "unknown scope": ("--set", "scope=everywhere"),
    "bucket given as a URL": ("--set", "gcs.bucket=gs://models"),
    "unknown log level": ("--set", "logLevel=VERBOSE"),
    "zero API replicas": ("--set", "api.replicas=0"),
    "bad pull policy": ("--set", "image.pullPolicy=Sometimes"),
    "non-string trainer env": ("--set-json", 'trainer.env={"TRAINING_AGENT_PRECISION": 16}'),
    "lower-case trainer env name": ("--set", "trainer.env.precision=bf16"),
    "bad memory quantity": ("--set", "trainer.resources.limits.memory=lots"),
    "secret name with capitals": ("--set", "supabase.existingSecret=Supabase"),
    "zero pending timeout": ("--set", "trainer.pendingTimeoutSeconds=0"),
    "zero lease": ("--set", "trainer.leaseSeconds=0"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES), ids=lambda c: c.replace(" ", "-"))
def test_values_that_break_the_schema_are_refused(helm: str, case: str) -> None:
    done = run_helm(helm, *template_args("defaults", OLDEST, BAD_VALUES[case]))
    assert done.returncode != 0, f"accepted: {BAD_VALUES[case]}"
    assert "values don't meet the specifications of the schema" in done.stderr, done.stderr


def _documented_keys(text: str) -> list[str]:
    """Keys of values.yaml without a comment line right above them (or inline); entries inside Kubernetes
    objects (resources, security contexts, tolerations) are documented by Kubernetes itself."""
    free_form = {"resources", "podSecurityContext", "securityContext", "tolerations"}
    undocumented: list[str] = []
    stack: list[tuple[int, str]] = []  # the keys enclosing this line, with their indents
    previous = ""
    for line in text.splitlines():
        match = re.match(r"^(\s*)(- )?([A-Za-z][\w.-]*):", line)
        if match:
            indent = len(match[1])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            inside_free_form = any(key in free_form for _, key in stack)
            commented = previous.strip().startswith("#") or " # " in line
            if not inside_free_form and not match[2] and not commented:
                undocumented.append(".".join([k for _, k in stack] + [match[3]]))
            stack.append((indent, match[3]))
        if line.strip():
            previous = line
    return undocumented


def test_every_value_is_commented_and_in_the_schema() -> None:
    values_text = (CHART / "values.yaml").read_text()
    assert _documented_keys(values_text) == []
    schema = json.loads((CHART / "values.schema.json").read_text())

    def check(values: dict[str, Any], node: dict[str, Any], path: str) -> None:
        assert node.get("additionalProperties") is False or "properties" not in node, path
        for key, value in values.items():
            assert key in node.get("properties", {}), f"{path}{key} is not in values.schema.json"
            child = node["properties"][key]
            if isinstance(value, dict) and "properties" in child:
                check(value, child, f"{path}{key}.")

    values = yaml.safe_load(values_text)
    assert schema["additionalProperties"] is False
    check(values, schema, "")
    assert set(schema["properties"]) - {"global"} == set(values)


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in pod["containers"] if c["name"] == name]
    assert len(found) == 1, name
    return found[0]


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        both_maps = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = _merged(base[key], value) if both_maps else value
    return merged


def _values(mode: str) -> dict[str, Any]:
    """The values helm uses in `mode`: the chart's defaults with the mode's file merged in, as helm does."""
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in MODES[mode]:
        values = _merged(values, yaml.safe_load(path.read_text()))
    return values


def _trainer_job(rendered: Rendered) -> dict[str, Any]:
    """The Job the controller would create for a run the API creates, with the settings the chart renders:
    the ConfigMap's keys as the pod's environment, read by the product's own Settings."""
    env = rendered.get("ConfigMap", "-config")["data"]
    with mock.patch.dict(os.environ, env):
        settings = Settings()
    spec = spec_for(PROJECT, {"epochs": 3}, settings)
    job: dict[str, Any] = build_job(run_name(PROJECT), settings.namespace, spec)
    return job


@pytest.mark.parametrize("mode", ["defaults", "namespace", "kind-dev"])
def test_the_rendered_settings_make_a_valid_trainer_job(helm: str, mode: str) -> None:
    rendered = render(helm, mode)
    job = _trainer_job(rendered)
    for version in (OLDEST, NEWEST):
        kubernetes_validate.validate(job, version, strict=True)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    values = _values(mode)
    gpus = values["trainer"]["gpus"]
    assert container["resources"].get("limits", {}).get("nvidia.com/gpu") == (str(gpus) if gpus else None)
    assert container["resources"]["requests"] == values["trainer"]["resources"]["requests"]
    assert pod["serviceAccountName"] == rendered.get("ServiceAccount", "-trainer")["metadata"]["name"]
    assert container["envFrom"] == [
        {"configMapRef": {"name": rendered.get("ConfigMap", "-trainer-env")["metadata"]["name"]}},
        {"secretRef": {"name": values["supabase"]["existingSecret"]}},
    ]
    assert pod.get("tolerations", []) == values["trainer"]["tolerations"]
    assert job["metadata"]["namespace"] == (values.get("runNamespace") or NAMESPACE)
    if mode == "namespace":
        assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        assert (pod["runtimeClassName"], pod["priorityClassName"]) == ("nvidia", "training")
        assert job["spec"]["suspend"] is True
        assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
        assert {"name": "gcs-key", "secret": {"secretName": "gcs-key"}} in pod["volumes"]
        trainer_env = rendered.get("ConfigMap", "-trainer-env")["data"]
        assert trainer_env["GCP_BUCKET_NAME"] == "automl-models"
        assert trainer_env["TRAINING_AGENT_PRECISION"] == "bf16"


def test_numeric_quantities_reach_the_job_as_strings(helm: str) -> None:
    rendered = render(
        helm, "defaults", OLDEST, "--set", "trainer.resources.requests.cpu=4", "--set", "trainer.gpus=0"
    )
    job = _trainer_job(rendered)
    kubernetes_validate.validate(job, OLDEST, strict=True)
    resources = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources == {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "32Gi"}}


def _rules(rendered: Rendered, kind: str, suffix: str) -> list[dict[str, Any]]:
    return list(rendered.get(kind, suffix)["rules"])


@pytest.mark.parametrize("mode", list(MODES))
def test_rbac_has_no_wildcards(helm: str, mode: str) -> None:
    rendered = render(helm, mode, NEWEST)
    roles = rendered.of_kind("Role") + rendered.of_kind("ClusterRole")
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert not any("*" in item for item in rule.get(field, [])), (role["metadata"]["name"], rule)


def test_rbac_per_component_and_mode(helm: str) -> None:
    namespaced = render(helm, "namespace")
    assert namespaced.of_kind("ClusterRole") == namespaced.of_kind("ClusterRoleBinding") == []
    assert {r["metadata"]["namespace"] for r in namespaced.of_kind("Role")} == {"ml-runs"}
    controller = {
        (g, r): set(rule["verbs"])
        for rule in _rules(namespaced, "Role", "-controller")
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    assert controller[("automl.dev", "trainingruns")] == {"get", "list", "watch", "patch"}
    assert controller[("automl.dev", "trainingruns/status")] == {"get", "patch"}
    assert controller[("batch", "jobs")] == {"get", "list", "watch", "create", "delete"}
    assert controller[("", "pods")] == {"get", "list", "watch"}  # read only
    assert controller[("", "events")] == {"create"}
    assert controller[("kopf.dev", "kopfpeerings")] == {"get", "list", "watch", "patch"}
    assert _rules(namespaced, "Role", "-trainer") == [
        {"apiGroups": ["automl.dev"], "resources": ["trainingruns/status"], "verbs": ["patch"]}
    ]
    assert _rules(namespaced, "Role", "-api") == [
        {
            "apiGroups": ["automl.dev"],
            "resources": ["trainingruns"],
            "verbs": ["get", "list", "create", "delete"],
        }
    ]
    peering = namespaced.get("KopfPeering", "training-agent")
    assert peering["metadata"]["namespace"] == "ml-runs"

    cluster = render(helm, "cluster")
    [role] = cluster.of_kind("ClusterRole")
    assert role["metadata"]["name"].endswith("-controller")
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert {"clusterkopfpeerings", "customresourcedefinitions"} <= resources
    assert "kopfpeerings" not in resources
    [binding] = cluster.of_kind("ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "ta-training-agent-controller", "namespace": NAMESPACE}
    ]
    assert cluster.of_kind("ClusterKopfPeering") and not cluster.of_kind("KopfPeering")
    args = _container(cluster.pod_specs()["ta-training-agent-controller"], "controller")["args"]
    assert "--all-namespaces" in args


def test_trainer_own_run_policy_only_where_the_cluster_has_it(helm: str) -> None:
    assert render(helm, "defaults", OLDEST).of_kind("ValidatingAdmissionPolicy") == []
    rendered = render(helm, "defaults", NEWEST)
    policy = rendered.get("ValidatingAdmissionPolicy", "-trainer-own-run")
    [condition] = policy["spec"]["matchConditions"]
    assert "system:serviceaccount:automl:ta-training-agent-trainer" in condition["expression"]
    [validation] = policy["spec"]["validations"]
    assert "authentication.kubernetes.io/pod-name" in validation["expression"]
    assert "request.name" in validation["expression"]
    binding = rendered.get("ValidatingAdmissionPolicyBinding", "-trainer-own-run")
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    assert rendered.get("ServiceAccount", "-trainer")["automountServiceAccountToken"] is False


@pytest.mark.parametrize("mode", list(MODES))
def test_pods_are_hardened_and_bounded(helm: str, mode: str) -> None:
    for name, pod in render(helm, mode).pod_specs().items():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert context["capabilities"] == {"drop": ["ALL"]}, (name, container["name"])
            assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
            if name.endswith(("-api", "-controller")):
                assert context["readOnlyRootFilesystem"] is True
        for container in pod["containers"]:
            assert "livenessProbe" in container, (name, container["name"])
            # The controller serves no traffic: liveness only.
            assert "readinessProbe" in container or container["name"] == "controller", (
                name,
                container["name"],
            )


def test_probes_point_at_the_real_endpoints(helm: str) -> None:
    pods = render(helm, "defaults").pod_specs()
    api = _container(pods["ta-training-agent-api"], "api")
    assert api["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert api["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert api["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    controller = _container(pods["ta-training-agent-controller"], "controller")
    assert "--liveness=http://0.0.0.0:8080/healthz" in controller["args"]
    assert controller["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert controller["ports"][0]["containerPort"] == 8080


def test_ingress_is_optional(helm: str) -> None:
    assert render(helm, "defaults").of_kind("Ingress") == []
    [ingress] = render(helm, "cluster").of_kind("Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [
        {"hosts": ["training.automl.example.com"], "secretName": "training-agent-tls"}
    ]


def test_dev_stack_wires_records_and_bucket_in_cluster(helm: str) -> None:
    rendered = render(helm, "kind-dev")
    [secret] = rendered.of_kind("Secret")
    assert secret["metadata"]["name"] == "training-agent-dev-supabase"
    assert secret["stringData"]["SUPABASE_URL"] == f"http://training-agent-supabase.{NAMESPACE}.svc:8080"
    emulator = f"http://training-agent-fake-gcs.{NAMESPACE}.svc:4443"
    for suffix in ("-config", "-trainer-env"):
        assert rendered.get("ConfigMap", suffix)["data"]["STORAGE_EMULATOR_HOST"] == emulator
    migration = rendered.get("ConfigMap", "-dev-stack")["data"]
    [sql] = [v for k, v in migration.items() if k.endswith(".sql")]
    assert "create table if not exists public.agent_logs" in sql
    assert "location /rest/v1/" in migration["supabase.conf"]
    assert {d["metadata"]["name"] for d in rendered.of_kind("Deployment")} == {
        f"training-agent-{c}" for c in ("api", "controller", "postgres", "supabase", "fake-gcs")
    }
    assert render(helm, "defaults").of_kind("Secret") == []


def test_notes_say_what_is_missing(helm: str) -> None:
    done = run_helm(helm, "install", "ta", str(CHART), "--dry-run=client", "--namespace", NAMESPACE)
    assert done.returncode == 0, done.stderr
    notes = done.stdout.split("NOTES:", 1)[1]
    assert "WARNING: gcs.bucket is empty" in notes
    assert '"training-agent-supabase" with SUPABASE_URL and SUPABASE_KEY' in notes
    assert "kubectl -n automl get trainingruns -w" in notes


def test_values_files_exist_for_every_mode() -> None:
    for files in MODES.values():
        assert all(Path(f).is_file() for f in files)
