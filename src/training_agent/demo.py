"""`training-agent demo`: play the other agents (a project and its dataset), then train it end to end.

The run goes through the HTTP API exactly as the MCP server's would (POST start, then GET status), and the
API's executor runs the trainer (a child process with the local executor), against whatever records and
storage the settings select: embedded SQLite and a local folder by default.
"""

from __future__ import annotations

import difflib
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from training_agent.core.errors import ConfigurationError, InvalidInputError, TrainingAgentError
from training_agent.core.records import ProjectStatus, RecordsStore
from training_agent.core.settings import Settings
from training_agent.core.storage import ObjectStorage, is_gcs_url
from training_agent.demo_summary import shown_value, summarize
from training_agent.progress_bar import PlainLines, RichBar, state_from_status
from training_agent.projects import create_project, unknown_key_hint
from training_agent.synthetic import write_shapes_zip

logger = logging.getLogger("training_agent.demo")
_POLL_S = 0.5


class DemoError(TrainingAgentError):
    """The demo could not start or follow its run."""


# What the demo sets so that it finishes in well under a minute on 2 CPU cores (with `pretrained`, below);
# every other training option is the project default, and what the user passes wins over these.
QUICK_OPTIONS: dict[str, Any] = {"epochs": 3, "image_size": 64}


@dataclass(frozen=True)
class DemoOptions:
    dataset: str | None = None
    # The training options (project metadata keys) the user gave; see `project_metadata`.
    training: dict[str, Any] = field(default_factory=dict)
    api_url: str | None = None  # None: serve the API in-process for the demo
    timeout_s: float = 3600.0


def training_option_defaults() -> dict[str, Any]:
    """Every training option the trainer reads (`TrainingConfig`), with its project default."""
    from training_agent.trainer.config import TrainingConfig

    return {
        key: None if info.is_required() else info.get_default(call_default_factory=True)
        for key, info in TrainingConfig.model_fields.items()
    }


def model_name(training: dict[str, Any]) -> str:
    return str(training.get("preferred_model") or training_option_defaults()["preferred_model"])


def project_metadata(
    options: DemoOptions, *, weights_cached: Callable[[str], bool] | None = None
) -> dict[str, Any]:
    """The demo project's metadata: the demo's quick options, then the user's; nothing else, so every other
    option is the project default. `pretrained`, unless given, is whether the weights are cached (no
    download in a demo). A value of None removes the key: `--option epochs=null` trains the project's
    default epochs."""
    metadata = {**QUICK_OPTIONS, **options.training}
    if metadata.get("pretrained") is None:
        cached = weights_cached or pretrained_weights_cached
        metadata["pretrained"] = cached(model_name(metadata))
    return {key: value for key, value in metadata.items() if value is not None}


def training_options_help() -> tuple[str, dict[str, str]]:
    """For `training-agent demo --help`, made from the trainer's own list so that it never drifts: a table
    of every training option with its project default and what the demo sets, and each key's default as
    the demo uses it (for the named flags' help)."""
    defaults = training_option_defaults()
    demo_sets = {key: shown_value(value) for key, value in QUICK_OPTIONS.items()}
    demo_sets["pretrained"] = "true if the weights are cached, else false"
    width = max(len(key) for key in defaults) + 2
    project_width = max(len("project default"), *(len(shown_value(v)) for v in defaults.values())) + 2
    lines = [
        "training options: --option KEY=VALUE sets any of these keys of the project's metadata",
        "(a named flag above sets the same key). The demo sets only those in its column; every",
        "other key is the project default.",
        f"  {'key':<{width}}{'project default':<{project_width}}demo",
    ]
    for key, value in defaults.items():
        lines.append(
            f"  {key:<{width}}{shown_value(value):<{project_width}}{demo_sets.get(key, '')}".rstrip()
        )
    shown = {
        key: (
            f"{demo_sets[key]}, set by the demo; project default {shown_value(defaults.get(key))}"
            if key in demo_sets
            else f"{shown_value(defaults.get(key))}, the project default"
        )
        for key in defaults
    }
    return "\n".join(lines), shown


def check_options(options: DemoOptions) -> None:
    """Refuse a dataset, options or a model that cannot work before anything is created (project, server,
    run): a dataset that is not there, an unknown key (a typo the trainer would silently ignore), a value
    the trainer's own validation refuses (naming the key), a model torchvision does not have."""
    # The dataset first: its check is a stat, the model's imports torchvision (seconds).
    dataset = options.dataset
    if dataset and not is_gcs_url(dataset) and not Path(dataset).exists():
        raise InvalidInputError(f"--dataset {dataset}: no such file or folder")
    # Imported only when needed: pydantic models of the trainer, torchvision.
    from training_agent.trainer.config import TrainingConfig
    from training_agent.trainer.model import available_models

    known = list(TrainingConfig.model_fields)
    for key in options.training:
        if key not in TrainingConfig.model_fields:
            raise ConfigurationError(
                f"--option {key}: not a training option; "
                + unknown_key_hint(key, known, "`training-agent demo --help` lists the keys")
            )
    # The metadata the project will get (pretrained left to the trainer's default: its check is a file).
    TrainingConfig.from_metadata({**QUICK_OPTIONS, **options.training})
    model = model_name(options.training)
    known_models = available_models()
    if model not in known_models:
        close = difflib.get_close_matches(model, known_models, n=3)
        hint = (
            f"did you mean {', '.join(close)}?" if close else "try resnet18, efficientnet_b0 or convnext_tiny"
        )
        raise InvalidInputError(f"--model {model} is not a torchvision classification model; {hint}")


def pretrained_weights_cached(model: str) -> bool:
    """Whether torch's hub cache already holds the default weights for `model` (no network needed)."""
    from training_agent.trainer.model import hub_cache_file

    return hub_cache_file(model).is_file()


def _dataset_source(dataset: str | None, folder: Path) -> str:
    """What the demo project's dataset comes from: a gs:// URL or a zip as given, a folder zipped, or a
    generated zip (both written into `folder`); `create_project` uploads a local zip to the bucket."""
    if dataset and (is_gcs_url(dataset) or Path(dataset).is_file()):
        return dataset if is_gcs_url(dataset) else str(Path(dataset).resolve())
    if dataset:
        source = Path(dataset)
        if not source.is_dir():
            raise InvalidInputError(f"--dataset {dataset}: no such file or folder")
        return shutil.make_archive(str(folder / "dataset"), "zip", source)
    return str(write_shapes_zip(folder / "dataset.zip"))


def run_demo(
    options: DemoOptions, settings: Settings, records: RecordsStore, view: RichBar | PlainLines | None = None
) -> tuple[int, dict[str, Any]]:
    """Create the project, start it through the API, follow it to the end (shown in `view`: a log line per
    epoch by default); returns (exit code, summary).

    With `options.api_url` the demo talks to that server (which must share these records); otherwise it
    serves the API itself on a free loopback port for the length of the demo. Callers check the options
    first (`check_options`).
    """
    storage = ObjectStorage(settings)
    run_tag = uuid.uuid4().hex[:8]
    metadata = project_metadata(options)
    with tempfile.TemporaryDirectory() as tmp:
        source = _dataset_source(options.dataset, Path(tmp))
        project, dataset = create_project(
            records, storage, name=f"demo-{run_tag}", dataset=source, metadata=metadata
        )
    dataset_url = str(dataset.gcs_url)
    api_key = settings.mcp_api_key.get_secret_value() if settings.mcp_api_key else None
    if options.api_url:
        follow_through_api(options.api_url, project.id, api_key, options.timeout_s, view)
    else:
        from training_agent.api.main import create_app
        from training_agent.api.server import background_server

        if isinstance(view, RichBar) and settings.log_level == "INFO":
            # The trainer writes to this terminal too: under a bar, only its warnings (its steps are in
            # agent_logs, and the summary).
            settings = settings.model_copy(update={"log_level": "WARNING"})
        with background_server(create_app(settings, records=records)) as url:
            follow_through_api(url, project.id, api_key, options.timeout_s, view)
    summary = summarize(records, project.id, dataset_url, options=metadata)
    error = summary["error"] or {}
    exit_code = (
        0 if summary["status"] == ProjectStatus.PENDING_EVALUATION.value else int(error.get("exit_code") or 1)
    )
    return exit_code, summary


def follow_through_api(
    base_url: str,
    project_id: uuid.UUID,
    api_key: str | None,
    timeout_s: float,
    view: RichBar | PlainLines | None = None,
) -> None:
    """POST the start, then poll the status until the project leaves `training`, showing its progress in
    `view` (default: a log line per epoch)."""
    view = view or PlainLines(announce_epochs=True)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
        started = client.post("/agents/training/start", json={"project_id": str(project_id)})
        if started.status_code != 200:
            refused = client.get(f"/agents/training/status/{project_id}", params={"limit": 0})
            if refused.status_code == 200 and refused.json()["status"] == ProjectStatus.FAILED.value:
                return  # refused by the start's pre-flight: the project's error says why
            raise DemoError(
                f"The API refused the start ({started.status_code}): {started.json().get('detail')}"
            )
        status_url = started.json()["status_url"]
        logger.info("Started %s; following %s%s", started.json()["run_name"], base_url, status_url)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = client.get(status_url, params={"limit": 0}).json()
            view.update(state_from_status(state["progress"]))
            if state["status"] != ProjectStatus.TRAINING.value:
                return
            time.sleep(_POLL_S)
    raise DemoError(
        f"The run did not finish within {timeout_s:.0f} s; it goes on: see {base_url}{status_url}"
    )
