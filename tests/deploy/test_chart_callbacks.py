"""The callbacks' settings in the chart: the API and the controller read them from the ConfigMap (through the
product's own Settings) and the signing key from a Secret reference; the trainers get none of them."""

from __future__ import annotations

import os
from unittest import mock

from tests.deploy.conftest import render, run_helm, template_args
from tests.deploy.test_chart import OLDEST, _container
from training_agent.core.settings import Settings


def test_defaults_leave_callbacks_off(helm: str) -> None:
    rendered = render(helm, "defaults", OLDEST)
    with mock.patch.dict(os.environ, rendered.get("ConfigMap", "-config")["data"]):
        settings = Settings()
    assert settings.callback_allowed_host_list == [] and settings.callback_secret is None
    defaults = Settings.model_fields
    assert (
        settings.callback_attempts,
        settings.callback_timeout_seconds,
        settings.callback_backoff_seconds,
    ) == (
        defaults["callback_attempts"].default,
        defaults["callback_timeout_seconds"].default,
        defaults["callback_backoff_seconds"].default,
    )
    for name, spec in rendered.pod_specs().items():
        for container in spec["containers"]:
            assert all(e["name"] != "TRAINING_AGENT_CALLBACK_SECRET" for e in container.get("env", [])), name


def test_hosts_tries_and_the_secret_reach_the_api_and_the_controller(helm: str) -> None:
    rendered = render(
        helm,
        "namespace",
        OLDEST,
        "--set",
        "callbacks.allowedHosts=hooks.example.com\\,*.internal.example",
        "--set",
        "callbacks.existingSecret=callback-key",
        "--set",
        "callbacks.attempts=7",
        "--set",
        "callbacks.timeoutSeconds=3",
        "--set-json",  # --set reads 0.5 as a string
        "callbacks.backoffSeconds=0.5",
    )
    config = rendered.get("ConfigMap", "-config")["data"]
    with mock.patch.dict(os.environ, config):
        settings = Settings()
    assert settings.callback_allowed_host_list == ["hooks.example.com", "*.internal.example"]
    assert (settings.callback_attempts, settings.callback_timeout_seconds) == (7, 3.0)
    assert settings.callback_backoff_seconds == 0.5
    pods = rendered.pod_specs()
    reference = {
        "name": "TRAINING_AGENT_CALLBACK_SECRET",
        "valueFrom": {"secretKeyRef": {"name": "callback-key", "key": "TRAINING_AGENT_CALLBACK_SECRET"}},
    }
    assert reference in _container(pods["ta-training-agent-api"], "api")["env"]
    assert reference in _container(pods["ta-training-agent-controller"], "controller")["env"]
    # The trainers report nothing: none of it is in their environment.
    trainer_env = rendered.get("ConfigMap", "-trainer-env")["data"]
    assert not [key for key in trainer_env if key.startswith("TRAINING_AGENT_CALLBACK")]
    assert all("TRAINING_AGENT_CALLBACK_SECRET" not in c["data"] for c in rendered.of_kind("ConfigMap"))


def test_a_misspelt_callbacks_value_is_refused(helm: str) -> None:
    done = run_helm(helm, *template_args("defaults", OLDEST, ("--set", "callbacks.atempts=3")))
    assert done.returncode != 0
    done = run_helm(helm, *template_args("defaults", OLDEST, ("--set", "callbacks.attempts=0")))
    assert done.returncode != 0
