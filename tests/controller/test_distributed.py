"""Runs on many GPUs and many nodes: the torchrun command, the Indexed Job + headless Service, the JobSet
variant, and what the status makes of several pods. Pure functions, checked without any server; the Job
and the Service are also checked against the Kubernetes API's own schemas (kubernetes-validate, strict)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import kubernetes_validate
import pytest

from training_agent.controller.distributed import TORCHRUN, jobset_as_job
from training_agent.controller.manifests import build_job, build_objects
from training_agent.controller.status import Observed, derive
from training_agent.controller.workers import name_failed_worker, worker_states
from training_agent.core.runs import RunPhase
from training_agent.core.trainingrun import LABEL_RUN, TrainingRunSpec

PROJECT = UUID("6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f")
NAME = f"tr-{PROJECT}"
TRAIN = ["-m", "training_agent", "train", "--project-id", str(PROJECT), "--claimed"]
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
NEWEST = kubernetes_validate.latest_version()


def spec(**overrides: Any) -> TrainingRunSpec:
    return TrainingRunSpec.model_validate({"projectId": str(PROJECT), "image": "trainer:1", **overrides})


def container(job: dict[str, Any]) -> dict[str, Any]:
    [found] = job["spec"]["template"]["spec"]["containers"]
    return dict(found)


def valid(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, NEWEST, strict=True)


def test_many_gpus_one_pod_runs_torchrun_standalone() -> None:
    [job] = build_objects(NAME, "ml", spec(gpus=4))
    assert container(job)["command"] == [*TORCHRUN, "--standalone", "--nproc-per-node", "4", *TRAIN]
    assert container(job)["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert "completionMode" not in job["spec"] and "subdomain" not in job["spec"]["template"]["spec"]
    valid(job)


def test_one_gpu_keeps_the_plain_trainer_command() -> None:
    [job] = build_objects(NAME, "ml", spec(gpus=1, nodes=1, workload="JobSet"))
    assert job["kind"] == "Job"  # one node is a Job whatever the workload setting says
    assert container(job)["command"][0] == "training-agent"


def test_python_dash_m_training_agent_is_the_cli() -> None:
    """torchrun starts the trainer as `python -m training_agent`: that must be the same command."""
    done = subprocess.run(
        [sys.executable, "-m", "training_agent", "train", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--project-id" in done.stdout


def _launcher(command: list[str], index: int, port: int) -> list[str]:
    """The pod's command as its kubelet would run it on node `index`, pod 0 at 127.0.0.1:`port`, and the
    trainer asked for its --help instead of a training (the launcher is what is under test)."""
    assert command[:2] == ["training-agent", "torchrun"]  # the CLI (python -m training_agent here)
    args = [a.replace("$(JOB_COMPLETION_INDEX)", str(index)) for a in command[2 : command.index("train")]]
    if "--master-addr" in args:
        args[args.index("--master-addr") + 1] = "127.0.0.1"
        args[args.index("--master-port") + 1] = str(port)
    return [sys.executable, "-m", "training_agent", "torchrun", *args, "train", "--help"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_torchrun_commands_start_the_trainer_on_every_rank() -> None:
    """The real torchrun (CPU, gloo) runs the exact launcher lines of a two-GPU pod and of two nodes (two
    agents on this machine, node ranks from the completion index): every rank reaches the trainer's CLI."""
    port = _free_port()
    standalone = container(build_job(NAME, "ml", spec(gpus=2)))["command"]
    two_nodes = container(build_job(NAME, "ml", spec(gpus=1, nodes=2)))["command"]
    runs = [_launcher(standalone, 0, port)] + [_launcher(two_nodes, i, port) for i in (0, 1)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # The two nodes' agents must run at once (the rendezvous waits for both).
    procs = [
        subprocess.Popen(r, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for r in runs
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert [o.count("usage:") for o in outputs] == [2, 1, 1]  # the trainer's help, once per rank


def test_several_nodes_make_a_headless_service_and_an_indexed_job() -> None:
    service, job = build_objects(NAME, "ml", spec(gpus=2, nodes=3, queueName="team-a"))
    assert (service["kind"], job["kind"]) == ("Service", "Job")
    assert service["metadata"]["name"] == NAME and service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {LABEL_RUN: NAME}
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert "kueue.x-k8s.io/queue-name" not in service["metadata"]["labels"]  # only the Job is queued
    pods = job["spec"]["template"]
    assert pods["metadata"]["labels"][LABEL_RUN] == NAME  # what the Service selects
    assert pods["spec"]["subdomain"] == NAME  # pod <job>-<i> is <job>-<i>.<service>
    assert (job["spec"]["completionMode"], job["spec"]["completions"], job["spec"]["parallelism"]) == (
        "Indexed",
        3,
        3,
    )
    assert container(job)["command"] == [
        *TORCHRUN,
        "--nnodes",
        "3",
        "--nproc-per-node",
        "2",
        "--node-rank",
        "$(JOB_COMPLETION_INDEX)",
        "--master-addr",
        f"{NAME}-0.{NAME}",
        "--master-port",
        "29500",
        *TRAIN,
    ]
    assert container(job)["resources"]["limits"]["nvidia.com/gpu"] == "2"
    # What a one-node Job has is kept: retries, the failure policy, Kueue.
    single = build_job(NAME, "ml", spec(gpus=2, queueName="team-a"))
    for key in ("backoffLimit", "podFailurePolicy", "activeDeadlineSeconds", "suspend"):
        assert job["spec"][key] == single["spec"][key]
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert "successPolicy" not in job["spec"]  # every index must succeed unless the cluster says otherwise
    valid(service)
    valid(job)


def test_leader_success_policy() -> None:
    _, job = build_objects(NAME, "ml", spec(nodes=2, successPolicy="Leader"))
    assert job["spec"]["successPolicy"] == {"rules": [{"succeededIndexes": "0"}]}
    valid(job)


def test_cpu_only_nodes_run_one_process_each() -> None:
    _, job = build_objects(NAME, "ml", spec(gpus=0, nodes=2))
    command = container(job)["command"]
    assert command[command.index("--nproc-per-node") + 1] == "1"
    assert {"name": "TRAINING_AGENT_DEVICE", "value": "cpu"} in container(job)["env"]


def test_jobset_variant() -> None:
    """Fields of jobset.x-k8s.io/v1alpha2 JobSetSpec (api/jobset/v1alpha2/jobset_types.go): replicatedJobs,
    network, successPolicy, suspend, ttlSecondsAfterFinished; the child Job template is a batch/v1 Job's."""
    [jobset] = build_objects(
        NAME, "ml", spec(gpus=8, nodes=4, workload="JobSet", queueName="team-a", successPolicy="Leader")
    )
    assert (jobset["apiVersion"], jobset["kind"]) == ("jobset.x-k8s.io/v1alpha2", "JobSet")
    assert jobset["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    top = jobset["spec"]
    assert set(top) == {"replicatedJobs", "network", "successPolicy", "suspend", "ttlSecondsAfterFinished"}
    assert top["suspend"] is True  # Kueue admits the JobSet, every node at once, as one workload
    assert top["network"] == {"enableDNSHostnames": True, "publishNotReadyAddresses": True}
    assert top["successPolicy"] == {"operator": "All", "targetReplicatedJobs": ["node"]}
    [replicated] = top["replicatedJobs"]
    assert (replicated["name"], replicated["replicas"]) == ("node", 1)
    child = replicated["template"]
    assert child["spec"]["completionMode"] == "Indexed" and child["spec"]["completions"] == 4
    assert child["spec"]["successPolicy"] == {"rules": [{"succeededIndexes": "0"}]}
    # Only the JobSet is queued and suspended, only it is cleaned up after the TTL; JobSet makes the Service.
    assert "suspend" not in child["spec"] and "ttlSecondsAfterFinished" not in child["spec"]
    assert "kueue.x-k8s.io/queue-name" not in child["metadata"]["labels"]
    assert "kueue.x-k8s.io/queue-name" not in child["spec"]["template"]["metadata"]["labels"]
    assert "subdomain" not in child["spec"]["template"]["spec"]
    command = container(child)["command"]
    assert command[command.index("--master-addr") + 1] == f"{NAME}-node-0-0.{NAME}"
    # The child template is a Job's spec: checked as one.
    valid({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "child"}, "spec": child["spec"]})


def test_jobset_state_reads_as_a_jobs() -> None:
    done = {"status": {"conditions": [{"type": "Completed", "status": "True", "reason": "AllJobsCompleted"}]}}
    assert derive(jobset_as_job(done), [], now=NOW, image_pull_grace_s=300).phase == RunPhase.SUCCEEDED
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "FailedJobs"}]}}
    observed = derive(jobset_as_job(failed), [], now=NOW, image_pull_grace_s=300)
    assert (observed.phase, observed.reason) == (RunPhase.FAILED, "FailedJobs")
    queued = jobset_as_job({"spec": {"suspend": True}, "status": {}})
    assert derive(queued, [], now=NOW, image_pull_grace_s=300).phase == RunPhase.QUEUED
    active = jobset_as_job({"status": {"replicatedJobsStatus": [{"name": "node", "active": 1}]}})
    assert derive(active, [], now=NOW, image_pull_grace_s=300).phase == RunPhase.RUNNING


def worker_pod(
    index: int, phase: str, *, age_s: float = 10, state: dict[str, Any] | None = None, **status: Any
) -> dict[str, Any]:
    created = (NOW - timedelta(seconds=age_s)).isoformat()
    return {
        "metadata": {
            "name": f"{NAME}-{index}-{age_s:g}",
            "creationTimestamp": created,
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
        },
        "status": {
            "phase": phase,
            "containerStatuses": [{"name": "trainer", "state": state or {}}],
            **status,
        },
    }


def ended(reason: str, code: int, at_s: float) -> dict[str, Any]:
    finished = (NOW - timedelta(seconds=at_s)).isoformat()
    return {"terminated": {"reason": reason, "exitCode": code, "finishedAt": finished}}


def test_workers_newest_pod_of_each_index() -> None:
    pods = [
        worker_pod(1, "Failed", age_s=300, state=ended("OOMKilled", 137, 200)),
        worker_pod(0, "Running", age_s=300),
        worker_pod(1, "Running", age_s=100),
    ]
    assert worker_states(pods) == [
        {"index": 0, "pod": f"{NAME}-0-300", "phase": "Running", "attempts": 1},
        {"index": 1, "pod": f"{NAME}-1-100", "phase": "Running", "attempts": 2},
    ]


def test_a_failed_run_names_the_node_that_failed_first() -> None:
    pods = [
        worker_pod(0, "Failed", state=ended("Error", 1, at_s=5)),  # its peer died: collectives failed after
        worker_pod(1, "Failed", state=ended("OOMKilled", 137, at_s=30)),
    ]
    observed = Observed(
        RunPhase.FAILED, "BackoffLimitExceeded", "Job has reached the specified backoff limit"
    )
    named = name_failed_worker(observed, pods, nodes=2)
    assert named.reason == "BackoffLimitExceeded"
    assert named.message == (
        f"Node 1 of 2 failed (pod {NAME}-1-10: OOMKilled, exit code 137); "
        "Job has reached the specified backoff limit"
    )
    running = Observed(RunPhase.RUNNING, "Running")
    assert name_failed_worker(running, pods, nodes=2) is running


def test_one_node_waiting_holds_the_run() -> None:
    """Any node's newest pod that cannot be scheduled or pulled decides, not only the newest pod overall."""
    unschedulable = worker_pod(
        1,
        "Pending",
        age_s=5,
        conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
    )
    observed = derive(
        {"spec": {}, "status": {}},
        [worker_pod(0, "Running", age_s=1), unschedulable],
        now=NOW,
        image_pull_grace_s=300,
    )
    assert (observed.phase, observed.reason) == (RunPhase.QUEUED, "Unschedulable")


@pytest.mark.parametrize("field,value", [("gpus", 17), ("nodes", 0), ("nodes", 65), ("workload", "Pod")])
def test_spec_refuses_out_of_range(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        spec(**{field: value})
