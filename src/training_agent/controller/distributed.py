"""Runs on many GPUs and many nodes: the torchrun command line, the Indexed Job's extra fields, its headless
Service and the JobSet variant. Pure functions of the run's spec, like manifests.py.

One node with N GPUs: `torchrun --standalone` starts N processes in the one pod. M nodes: one pod per node,
each a torchrun agent whose node rank is its Job completion index. The rendezvous is torchrun's static one
(`--master-addr` = pod 0, `--node-rank` = the index), not c10d: with c10d the agents draw their ranks at the
rendezvous, so global rank 0 — the one process that may own the run's side effects — could land on any pod,
while the Job's success (successPolicy) and the status read it from index 0.
"""

from __future__ import annotations

import copy
from typing import Any

from training_agent.core.trainingrun import LABEL_RUN, TrainingRunSpec

RENDEZVOUS_PORT = 29500  # torchrun's default master port
# torchrun itself, with the trainer's exit code as the pod's (trainer/launch.py): 75 stays a retry that the
# podFailurePolicy does not count, 2 and 3 still fail the Job at once.
TORCHRUN = ["training-agent", "torchrun"]
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"  # annotation (and label, 1.28+) of each pod
JOBSET_API_VERSION = "jobset.x-k8s.io/v1alpha2"
JOBSET_GROUP, JOBSET_VERSION, JOBSETS = "jobset.x-k8s.io", "v1alpha2", "jobsets"
REPLICATED_JOB = "node"  # the JobSet's one replicatedJob: child Job <run>-node-0, pods <run>-node-0-<index>
LEADER_INDEX = "0"


def multi_node(spec: TrainingRunSpec) -> bool:
    return spec.nodes > 1


def uses_jobset(spec: TrainingRunSpec) -> bool:
    """A JobSet only for several nodes: one node is a plain Job whatever the setting says."""
    return multi_node(spec) and spec.workload == "JobSet"


def leader_address(name: str, spec: TrainingRunSpec) -> str:
    """Pod 0's DNS name: its hostname under the headless Service that the pods name as their subdomain."""
    if uses_jobset(spec):
        # JobSet's own naming: <jobset>-<replicatedJob>-<job index>-<pod index>.<subdomain = jobset name>
        return f"{name}-{REPLICATED_JOB}-0-0.{name}"
    return f"{name}-0.{name}"  # an Indexed Job's pod hostname is <job>-<index>


def trainer_command(name: str, spec: TrainingRunSpec) -> list[str]:
    """The trainer container's command: the trainer itself, or torchrun starting one per GPU and node."""
    train = ["train", "--project-id", str(spec.project_id), "--claimed"]
    if not multi_node(spec) and spec.gpus <= 1:
        return ["training-agent", *train]
    per_node = str(max(spec.gpus, 1))  # a CPU-only run of several nodes: one process per node (gloo)
    if not multi_node(spec):
        launcher = [*TORCHRUN, "--standalone", "--nproc-per-node", per_node]
    else:
        launcher = [
            *TORCHRUN,
            "--nnodes",
            str(spec.nodes),
            "--nproc-per-node",
            per_node,
            # Kubernetes expands $(VAR) from the container's environment; the Job controller sets this
            # variable in every pod of an Indexed Job (a JobSet's child Jobs are Indexed Jobs too).
            "--node-rank",
            "$(JOB_COMPLETION_INDEX)",
            "--master-addr",
            leader_address(name, spec),
            "--master-port",
            str(RENDEZVOUS_PORT),
        ]
    return [*launcher, "-m", "training_agent", *train]


def make_indexed(job_spec: dict[str, Any], name: str, spec: TrainingRunSpec) -> None:
    """Turn the one-pod Job spec into M pods, one per completion index, reachable under the Service."""
    job_spec["completionMode"] = "Indexed"
    job_spec["completions"] = spec.nodes
    job_spec["parallelism"] = spec.nodes  # all at once: the rendezvous waits for every node
    if spec.success_policy == "Leader":
        # Node 0 (global rank 0) finishing is the run finishing; the other pods are then stopped.
        job_spec["successPolicy"] = {"rules": [{"succeededIndexes": LEADER_INDEX}]}
    if not uses_jobset(spec):
        job_spec["template"]["spec"]["subdomain"] = name  # pod <job>-<i> resolves as <job>-<i>.<service>


def build_service(name: str, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    """The headless Service that gives each pod of an Indexed Job a DNS name (pod 0 is the rendezvous)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "clusterIP": "None",
            "selector": {LABEL_RUN: name},
            # Pods must find each other while they start, long before any of them is Ready.
            "publishNotReadyAddresses": True,
            "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT}],
        },
    }


def build_jobset(job: dict[str, Any], queue_label: str) -> dict[str, Any]:
    """The JobSet that wraps the run's Indexed Job (`job`, from build_job) as its one replicatedJob.

    Fields used (jobset.x-k8s.io/v1alpha2 JobSetSpec): replicatedJobs[{name, replicas, template}], network
    {enableDNSHostnames, publishNotReadyAddresses} (JobSet makes the headless Service, named after the
    JobSet), successPolicy {operator, targetReplicatedJobs}, suspend (Kueue admits the JobSet as one
    workload) and ttlSecondsAfterFinished. No failurePolicy: the JobSet fails when its Job fails, and the
    Job's backoffLimit and podFailurePolicy already decide the retries."""
    meta = job["metadata"]
    child = copy.deepcopy(job["spec"])
    ttl = child.pop("ttlSecondsAfterFinished", None)  # the JobSet's to clean up, not its child's
    suspend = child.pop("suspend", None)
    child_labels = {k: v for k, v in meta["labels"].items() if k != queue_label}
    pod_labels = child["template"]["metadata"]["labels"]
    # Only the JobSet is queued: a queue label on its Jobs or pods would make Kueue admit them apart.
    child["template"]["metadata"]["labels"] = {k: v for k, v in pod_labels.items() if k != queue_label}
    jobset_spec: dict[str, Any] = {
        "replicatedJobs": [
            {
                "name": REPLICATED_JOB,
                "replicas": 1,
                "template": {"metadata": {"labels": child_labels}, "spec": child},
            }
        ],
        "network": {"enableDNSHostnames": True, "publishNotReadyAddresses": True},
        "successPolicy": {"operator": "All", "targetReplicatedJobs": [REPLICATED_JOB]},
    }
    if ttl is not None:
        jobset_spec["ttlSecondsAfterFinished"] = ttl
    if suspend:
        jobset_spec["suspend"] = True
    return {
        "apiVersion": JOBSET_API_VERSION,
        "kind": "JobSet",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "labels": dict(meta["labels"])},
        "spec": jobset_spec,
    }


def jobset_as_job(jobset: dict[str, Any]) -> dict[str, Any]:
    """A JobSet's state in the shape of a Job's, for the one phase table in status.py: Completed becomes
    Complete, Failed stays Failed, suspend and the count of active child Jobs carry over."""
    status = jobset.get("status") or {}
    conditions = []
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Completed":
            conditions.append({**condition, "type": "Complete"})
        elif condition.get("type") == "Failed":
            conditions.append(dict(condition))
    active = sum(int(r.get("active") or 0) for r in status.get("replicatedJobsStatus") or [])
    return {
        "metadata": dict(jobset.get("metadata") or {}),
        "spec": {"suspend": bool((jobset.get("spec") or {}).get("suspend"))},
        "status": {"conditions": conditions, "active": active},
    }
