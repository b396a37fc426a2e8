"""What the control plane's pods and the trainers get from the chart: settings through the ConfigMaps (read by
the product's own Settings), credentials only as references to Secrets."""

from __future__ import annotations

import os
from typing import Any
from unittest import mock

from tests.deploy.conftest import render
from tests.deploy.test_chart import OLDEST, _container, _values
from training_agent.core.settings import Settings


def test_pending_timeout_and_lease_reach_the_controller_and_the_trainers(helm: str) -> None:
    rendered = render(
        helm,
        "defaults",
        OLDEST,
        "--set",
        "trainer.pendingTimeoutSeconds=600",
        "--set",
        "trainer.leaseSeconds=45",
    )
    with mock.patch.dict(os.environ, rendered.get("ConfigMap", "-config")["data"]):
        settings = Settings()
    assert (settings.trainer_pending_timeout_seconds, settings.run_lease_seconds) == (600, 45.0)
    # The trainer paces its heartbeats by the same lease.
    assert rendered.get("ConfigMap", "-trainer-env")["data"]["TRAINING_AGENT_RUN_LEASE_SECONDS"] == "45"
    defaults: dict[str, Any] = _values("defaults")["trainer"]
    assert (defaults["pendingTimeoutSeconds"], defaults["leaseSeconds"]) == (
        Settings.model_fields["trainer_pending_timeout_seconds"].default,
        Settings.model_fields["run_lease_seconds"].default,
    )


def test_progress_pace_reaches_the_trainers(helm: str) -> None:
    """The trainers write their in-epoch progress at the chart's pace, read back by their own Settings."""
    rendered = render(helm, "defaults", OLDEST, "--set", "trainer.progressEverySeconds=3")
    with mock.patch.dict(os.environ, rendered.get("ConfigMap", "-trainer-env")["data"]):
        assert Settings().progress_every_seconds == 3.0
    default = _values("defaults")["trainer"]["progressEverySeconds"]
    assert default == Settings.model_fields["progress_every_seconds"].default


def test_secrets_are_references_mounted_where_needed(helm: str) -> None:
    rendered = render(helm, "namespace")
    assert rendered.of_kind("Secret") == []  # the chart never carries credentials outside the dev stack
    pods = rendered.pod_specs()
    api = _container(pods["ta-training-agent-api"], "api")
    controller = _container(pods["ta-training-agent-controller"], "controller")
    for container in (api, controller):
        assert {"secretRef": {"name": "supabase-credentials"}} in container["envFrom"]
    assert {
        "name": "MCP_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "mcp-token", "key": "token"}},
    } in api["env"]
    # Both read the bucket: the API datasets, the controller the checkpoints of runs it reaps.
    for pod, container in (("api", api), ("controller", controller)):
        assert {"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/var/secrets/gcs/key.json"} in container[
            "env"
        ]
        assert {"name": "gcs-key", "mountPath": "/var/secrets/gcs", "readOnly": True} in container[
            "volumeMounts"
        ]
        assert {"name": "gcs-key", "secret": {"secretName": "gcs-key"}} in pods[f"ta-training-agent-{pod}"][
            "volumes"
        ]
    # Only the API reads the MCP token.
    assert all(e["name"] != "MCP_API_KEY" for e in controller["env"])
    # Nothing that looks like a credential in clear text.
    for config in rendered.of_kind("ConfigMap"):
        assert not {"SUPABASE_KEY", "MCP_API_KEY"} & set(config["data"])
