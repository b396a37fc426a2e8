"""Service settings from the environment (Requirement 10).

The variables the other agents share keep their plain names (`SUPABASE_URL`, `GCP_BUCKET_NAME`, ...); the
project's own carry the `TRAINING_AGENT_` prefix. Nothing here is built at import time: callers use
`get_settings()`, which tests can clear or bypass by building `Settings(...)` themselves.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from training_agent.core.errors import ConfigurationError

ENV_PREFIX = "TRAINING_AGENT_"
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
Device = Literal["auto", "cpu", "cuda"]

# GCS bucket naming rules, simplified: 3-63 characters of lowercase letters, digits, '-', '_' and '.',
# starting and ending with a letter or digit.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")


class Settings(BaseSettings):
    """Every setting of the service; see the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # Shared with the other agents (Requirement 10): no prefix.
    supabase_url: str | None = Field(default=None, validation_alias="SUPABASE_URL")
    supabase_key: SecretStr | None = Field(default=None, validation_alias="SUPABASE_KEY")
    gcp_bucket_name: str | None = Field(default=None, validation_alias="GCP_BUCKET_NAME")
    google_application_credentials: Path | None = Field(
        default=None, validation_alias="GOOGLE_APPLICATION_CREDENTIALS"
    )
    log_level: LogLevel = Field(default="INFO", validation_alias="LOG_LEVEL")
    # `json`: one JSON object per line (timestamp, level, logger, message, project_id, run_name, request_id).
    log_format: Literal["text", "json"] = Field(default="text", validation_alias="LOG_FORMAT")
    mcp_api_key: SecretStr | None = Field(default=None, validation_alias="MCP_API_KEY")

    # The project's own.
    agent_name: str = "training_agent"
    data_dir: Path = Path(".training-agent")
    database_path: Path | None = None  # default: <data_dir>/records.db
    local_bucket_dir: Path | None = None  # default: <data_dir>/bucket
    work_dir: Path = Path(tempfile.gettempdir()) / "training-agent"
    gcp_project: str | None = None
    max_dataset_bytes: int = Field(default=20 * 1024**3, gt=0)
    max_dataset_files: int = Field(default=1_000_000, gt=0)
    # Uncompressed over compressed size above which an archive reads as a zip bomb (images barely compress).
    max_compression_ratio: float = Field(default=200.0, gt=1)
    # The API checks a dataset's layout from its zip's central directory before a run (and a GPU) is started.
    preflight: bool = True
    # Unreadable images are skipped (and named in agent_logs) up to this share of a dataset's images.
    max_bad_image_fraction: float = Field(default=0.01, ge=0, le=1)
    # Byte-identical images in two splits (train/test leakage) fail the run instead of only a warning.
    fail_on_split_leakage: bool = False
    upload_attempts: int = Field(default=3, ge=2)  # the first try plus at least one retry (Req 6.4)
    num_workers: int | None = Field(default=None, ge=0)  # default: the CPUs this process may use, at most 8
    device: Device = "auto"
    log_every_steps: int = Field(default=10, gt=0)
    # The trainer writes its in-epoch progress (step, images/s, ETA) into the run record at most this often.
    progress_every_seconds: float = Field(default=5.0, gt=0)
    # Decode every image once into a uint8 cache (memory, or a file in the work dir); splits over the
    # budget are decoded by DataLoader workers every epoch instead.
    data_cache: Literal["memory", "disk", "off"] = "memory"
    data_cache_max_bytes: int = Field(default=8 * 1024**3, ge=0)
    gpu_decode: bool = True  # on CUDA, the cache's JPEGs are decoded by nvjpeg on the GPU (others: PIL)
    # Images with more pixels are refused as decompression bombs (Pillow's Image.MAX_IMAGE_PIXELS; this
    # default is Pillow's own): a small file that would need gigabytes once decoded.
    max_image_pixels: int = Field(default=89_478_485, gt=0)
    # auto: bf16 autocast where the hardware has it, fp16 with a loss scaler on GPUs without bf16, else fp32.
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    channels_last: bool = True
    compile: bool = False  # torch.compile the model: slower start, faster steps on long GPU runs
    checkpoints: bool = True  # a resume checkpoint in the bucket after every epoch and on SIGTERM
    # Under torchrun (several GPUs or nodes): BatchNorm statistics over every GPU's batch (GPUs only).
    sync_batchnorm: bool = False
    # Under torchrun: how long any collective may wait, the longest being the other processes' wait while
    # rank 0 downloads and checks the dataset.
    distributed_timeout_seconds: float = Field(default=1800.0, gt=0)
    # The local executor (and the demo): processes per run, started by torchrun (gloo on a CPU).
    local_nproc_per_node: int = Field(default=1, ge=1, le=64)
    # `training-agent train` keeps freed memory in its heap for the next step (trainer/allocator.py).
    malloc_tuning: bool = True
    # torch's compute threads per trainer process; 0: the CPUs this process may use (its cgroup quota
    # included) shared by the processes on the machine, unless OMP_NUM_THREADS says otherwise.
    cpu_threads: int = Field(default=0, ge=0, le=1024)

    # The API (`training-agent serve`).
    executor: Literal["local", "kubernetes"] = "local"
    max_concurrent_runs: int = Field(default=1, ge=1)
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    max_request_bytes: int = Field(default=64 * 1024, gt=0)
    cors_origins: str = ""  # comma-separated; empty: no CORS headers at all
    api_threads: int | None = Field(default=None, ge=1, le=256)  # default: 2 on SQLite, 16 on Supabase

    # Kubernetes: the kubernetes executor (API) and the controller.
    kubeconfig: Path | None = None  # default: in-cluster service account, else $KUBECONFIG / ~/.kube/config
    namespace: str = "default"
    trainer_image: str = "ghcr.io/automl/training-agent-trainer:0.1.0"
    trainer_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    trainer_gpus: int = Field(default=1, ge=0, le=16)  # per node; more than 1: torchrun, one process each
    # More than 1: one pod per node (an Indexed Job and a headless Service, or a JobSet), torchrun in each.
    trainer_nodes: int = Field(default=1, ge=1, le=64)
    # What a run of several nodes becomes: a batch/v1 Job, or a JobSet where JobSet is installed.
    trainer_workload: Literal["job", "jobset"] = "job"
    # leader: a run of several nodes succeeds when node 0 does (Job successPolicy: Kubernetes 1.31+);
    # all: when every node does (any cluster).
    trainer_success_policy: Literal["all", "leader"] = "all"
    trainer_env_secret: str | None = "training-agent-env"  # noqa: S105 - a Secret's name, not a secret
    trainer_env_configmap: str | None = None  # non-secret trainer environment (bucket name, options)
    trainer_gcs_secret: str | None = None
    trainer_service_account: str | None = None
    # Kubernetes resource requirements ({"requests": {...}, "limits": {...}}); the GPU limit is added to them.
    trainer_resources: dict[str, dict[str, str]] = Field(default_factory=dict)
    trainer_node_selector: dict[str, str] = Field(default_factory=dict)
    trainer_tolerations: list[dict[str, Any]] = Field(default_factory=list)
    trainer_priority_class: str | None = None
    trainer_runtime_class: str | None = None
    trainer_shm_size: str = "2Gi"
    trainer_deadline_seconds: int = Field(default=24 * 3600, ge=1)
    trainer_backoff_limit: int = Field(default=2, ge=0)
    trainer_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=0)
    trainer_image_pull_grace_seconds: int = Field(default=300, ge=0)
    # SIGTERM → SIGKILL: long enough to finish a step and upload a checkpoint.
    trainer_termination_grace_seconds: int = Field(default=120, ge=1)
    trainer_queue_name: str | None = None
    controller_resync_seconds: float = Field(default=30.0, gt=0)
    # Where the controller serves Prometheus metrics (/metrics); port 0: not at all. The chart listens on
    # 0.0.0.0 for Prometheus to scrape the pod.
    controller_metrics_host: str = "127.0.0.1"
    controller_metrics_port: int = Field(default=9090, ge=0, le=65535)
    # A trainer pod Pending this long with an unschedulable reason fails its run (a Job suspended by Kueue
    # is queued, not stuck, and never times out here).
    trainer_pending_timeout_seconds: int = Field(default=15 * 60, ge=1)

    # Leases: a trainer heart-beats into its run record; a run whose heartbeat is older than this is reaped
    # (failed, its leftovers removed) by the API server or the controller.
    run_lease_seconds: float = Field(default=60.0, gt=0)

    # Callbacks (core/callbacks.py): a start may name a URL that is told, signed, how its run ended.
    callback_allowed_hosts: str = ""  # comma-separated hosts (`*.example.com`: its subdomains); empty: none
    callback_secret: SecretStr | None = None  # the HMAC-SHA256 key of the signature; unset: none accepted
    callback_attempts: int = Field(default=5, ge=1, le=20)  # tries per callback (connection errors, 5xx)
    callback_timeout_seconds: float = Field(default=10.0, gt=0)  # per try
    callback_backoff_seconds: float = Field(default=1.0, ge=0)  # first retry's wait; doubles, at most 60 s

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_log_format(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("trainer_resources", mode="before")
    @classmethod
    def _quantities_as_strings(cls, value: object) -> object:
        # YAML and JSON write `cpu: 4` as a number; Kubernetes quantities are strings.
        if isinstance(value, dict):
            return {
                kind: {k: str(v) for k, v in amounts.items()} if isinstance(amounts, dict) else amounts
                for kind, amounts in value.items()
            }
        return value

    @field_validator("supabase_url", "gcp_bucket_name", "gcp_project", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # `FOO=` in an env file means "not set", not "the empty string".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("supabase_url")
    @classmethod
    def _check_supabase_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http(s) URL such as https://<project>.supabase.co")
        return value.rstrip("/") if value else value

    @field_validator("gcp_bucket_name")
    @classmethod
    def _check_bucket(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith("gs://"):
            raise ValueError("must be the bare bucket name, without gs://")
        if not _BUCKET_RE.match(value):
            raise ValueError("is not a valid bucket name (3-63 of a-z, 0-9, '-', '_', '.')")
        return value

    @field_validator("google_application_credentials")
    @classmethod
    def _check_credentials_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"names {value}, which is not a readable file")
        return value

    @field_validator("callback_secret", mode="before")
    @classmethod
    def _blank_secret_is_unset(cls, value: object) -> object:
        # `TRAINING_AGENT_CALLBACK_SECRET=` (an empty Secret key) must read as "no secret", never as a key.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("mcp_api_key")
    @classmethod
    def _refuse_empty_api_key(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty key would be "set" yet match only an empty bearer token: requests without the header
        # pass while every real token gets 401. Unset means no authentication; empty is a mistake.
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("is set but empty: set a token, or unset it to disable authentication")
        return value

    @model_validator(mode="after")
    def _supabase_both_or_neither(self) -> Settings:
        if (self.supabase_url is None) != (self.supabase_key is None):
            raise ValueError("SUPABASE_URL and SUPABASE_KEY must be set together (or neither, for SQLite)")
        return self

    def to_env(self) -> dict[str, str]:
        """These settings as environment variables, for child processes (trainers) to read back."""
        env = {}
        for field in type(self).model_fields:
            value = getattr(self, field)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, dict | list):
                value = json.dumps(value)  # how pydantic-settings reads complex values back
            env[env_name(field)] = str(value)
        return env

    @property
    def heartbeat_seconds(self) -> float:
        """How often a trainer renews its lease: several times per lease, so one slow write is no loss."""
        return max(min(self.run_lease_seconds / 4, 15.0), 0.2)

    @property
    def callback_allowed_host_list(self) -> list[str]:
        return [h.strip().lower() for h in self.callback_allowed_hosts.split(",") if h.strip()]

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def resolved_num_workers(self) -> int:
        return self.num_workers if self.num_workers is not None else min(cpu_count(), 8)

    @property
    def uses_supabase(self) -> bool:
        return self.supabase_url is not None

    @property
    def resolved_api_threads(self) -> int:
        return self.api_threads or (16 if self.uses_supabase else 2)

    @property
    def resolved_database_path(self) -> Path:
        return self.database_path or self.data_dir / "records.db"

    @property
    def resolved_local_bucket_dir(self) -> Path:
        return self.local_bucket_dir or self.data_dir / "bucket"

    @property
    def model_store_root(self) -> str:
        """Where models are uploaded: the GCS bucket, or the local folder standing in for it."""
        if self.gcp_bucket_name:
            return f"gs://{self.gcp_bucket_name}"
        return self.resolved_local_bucket_dir.resolve().as_uri()


def env_name(field: str) -> str:
    """The environment variable that sets `field`, for error messages."""
    info = Settings.model_fields.get(field)
    if info is not None and isinstance(info.validation_alias, str):
        return info.validation_alias
    return ENV_PREFIX + field.upper()


def describe_validation_error(error: ValidationError) -> str:
    """One readable line per bad variable, naming the variable rather than the Python field."""
    lines = []
    for item in error.errors():
        loc = item["loc"][0] if item["loc"] else ""
        field = str(loc)
        name = env_name(field) if field in Settings.model_fields else field
        message = item["msg"].removeprefix("Value error, ")
        if name:
            lines.append(f"{name}: {message}")
        else:
            lines.append(message)
    return "Invalid configuration: " + "; ".join(lines)


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment; a bad value raises ConfigurationError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigurationError(describe_validation_error(exc)) from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once. Tests call `get_settings.cache_clear()` after changing env."""
    return load_settings()


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cpu_count(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota. A pod's CPU limit is
    such a quota, and its affinity mask still lists every core of the node."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass  # no cgroup v2 here, or no limit set: the mask is the budget
    return cpus


def compute_threads(setting: int, env: Mapping[str, str], cpus: int, local_processes: int) -> int | None:
    """torch's compute threads for one of `local_processes` trainer processes sharing `cpus`, or None to keep
    the count OMP_NUM_THREADS already gave torch. `TRAINING_AGENT_CPU_THREADS` (`setting`) wins."""
    if setting > 0:
        return setting
    if env.get("OMP_NUM_THREADS"):
        return None
    return max(1, cpus // local_processes)
