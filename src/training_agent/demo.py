"""`training-agent demo`: play the other agents (a project and its dataset), then train it end to end.

The run goes through the HTTP API exactly as the MCP server's would (POST start, then GET status), and the
API's executor runs the trainer (a child process with the local executor), against whatever records and
storage the settings select: embedded SQLite and a local folder by default.
"""

from __future__ import annotations

import difflib
import json
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
from training_agent.core.storage import ObjectStorage
from training_agent.core.storage.urls import LocalURL, parse_url
from training_agent.synthetic import write_shapes_zip

logger = logging.getLogger("training_agent.demo")
_POLL_S = 0.5


class DemoError(TrainingAgentError):
    """The demo could not start or follow its run."""


# What the demo sets so that it finishes in well under a minute on 2 CPU cores (with `pretrained`, below);
# every other training option is the project default, and what the user passes wins over these.
QUICK_OPTIONS: dict[str, Any] = {"epochs": 3, "image_size": 64}
# Names people type for a training option that are not its key: the demo's flags, mostly.
_KEY_ALIASES = {"model": "preferred_model", "lr": "learning_rate"}


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


def _unknown_key_hint(key: str, known: list[str]) -> str:
    spelled = key.replace("-", "_").lower()
    if spelled in known and spelled != key:
        return f"did you mean {spelled}?"
    close = [_KEY_ALIASES[spelled]] if spelled in _KEY_ALIASES else []
    close += [name for name in difflib.get_close_matches(spelled, known, n=3) if name not in close]
    if close:
        return f"did you mean {' or '.join(close)}?"
    return "`training-agent demo --help` lists the keys"


def check_options(options: DemoOptions) -> None:
    """Refuse options, a model or a dataset that cannot work before anything is created (project, server,
    run): an unknown key (a typo the trainer would silently ignore), a value the trainer's own validation
    refuses (naming the key), a model torchvision does not have, a dataset that is not there."""
    # Imported only when needed: pydantic models of the trainer, torchvision.
    from training_agent.trainer.config import TrainingConfig
    from training_agent.trainer.model import available_models

    known = list(TrainingConfig.model_fields)
    for key in options.training:
        if key not in TrainingConfig.model_fields:
            raise ConfigurationError(
                f"--option {key}: not a training option; {_unknown_key_hint(key, known)}"
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
    dataset = options.dataset
    if dataset and not dataset.startswith("gs://") and not Path(dataset).exists():
        raise InvalidInputError(f"--dataset {dataset}: no such file or folder")


def pretrained_weights_cached(model: str) -> bool:
    """Whether torch's hub cache already holds the default weights for `model` (no network needed)."""
    from training_agent.trainer.model import hub_cache_file

    return hub_cache_file(model).is_file()


def _stage_dataset(storage: ObjectStorage, dataset: str | None, run_tag: str) -> str:
    """The dataset URL the project will point at: given, zipped from a folder, or generated."""
    if dataset and (dataset.startswith("gs://") or Path(dataset).is_file()):
        return dataset if dataset.startswith("gs://") else Path(dataset).resolve().as_uri()
    with tempfile.TemporaryDirectory() as tmp:
        if dataset:
            folder = Path(dataset)
            if not folder.is_dir():
                raise InvalidInputError(f"--dataset {dataset}: no such file or folder")
            archive = Path(shutil.make_archive(str(Path(tmp) / "dataset"), "zip", folder))
        else:
            archive = write_shapes_zip(Path(tmp) / "dataset.zip")
        url = storage.model_url(f"datasets/demo-{run_tag}.zip")
        storage.upload(archive, url)
    return url


def run_demo(options: DemoOptions, settings: Settings, records: RecordsStore) -> tuple[int, dict[str, Any]]:
    """Create the project, start it through the API, follow it to the end; returns (exit code, summary).

    With `options.api_url` the demo talks to that server (which must share these records); otherwise it
    serves the API itself on a free loopback port for the length of the demo. Callers check the options
    first (`check_options`).
    """
    storage = ObjectStorage(settings)
    run_tag = uuid.uuid4().hex[:8]
    metadata = project_metadata(options)
    dataset_url = _stage_dataset(storage, options.dataset, run_tag)
    project = records.create_project(
        f"demo-{run_tag}", status=ProjectStatus.PENDING_TRAINING.value, metadata=metadata
    )
    records.create_dataset(project.id, gcs_url=dataset_url, name=f"demo-{run_tag}")
    api_key = settings.mcp_api_key.get_secret_value() if settings.mcp_api_key else None
    if options.api_url:
        follow_through_api(options.api_url, project.id, api_key, options.timeout_s)
    else:
        from training_agent.api.main import create_app
        from training_agent.api.server import background_server

        with background_server(create_app(settings, records=records)) as url:
            follow_through_api(url, project.id, api_key, options.timeout_s)
    summary = summarize(records, project.id, dataset_url, options=metadata)
    error = summary["error"] or {}
    exit_code = (
        0 if summary["status"] == ProjectStatus.PENDING_EVALUATION.value else int(error.get("exit_code") or 1)
    )
    return exit_code, summary


def follow_through_api(base_url: str, project_id: uuid.UUID, api_key: str | None, timeout_s: float) -> None:
    """POST the start, then poll the status until the project leaves `training`, echoing each epoch."""
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
        last_epoch = 0
        while time.monotonic() < deadline:
            state = client.get(status_url, params={"limit": 0}).json()
            progress = state["progress"]
            if progress["epoch"] != last_epoch:
                last_epoch = progress["epoch"]
                logger.info(
                    "status: epoch %s/%s, val_accuracy %s, eta %ss",
                    progress["epoch"],
                    progress["total_epochs"],
                    progress["val_accuracy"],
                    progress["eta_seconds"],
                )
            if state["status"] != ProjectStatus.TRAINING.value:
                return
            time.sleep(_POLL_S)
    raise DemoError(
        f"The run did not finish within {timeout_s:.0f} s; it goes on: see {base_url}{status_url}"
    )


def summarize(
    records: RecordsStore,
    project_id: uuid.UUID,
    dataset_url: str,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The project's outcome as the other agents see it in the records; `options` is the metadata the demo
    gave the project (what differs from the project defaults)."""
    project = records.get_project(project_id)
    models = records.list_models(project_id)
    model = models[-1] if models else None
    meta = model.metadata if model else {}
    test_metrics = meta.get("test_metrics")
    if not isinstance(test_metrics, dict):
        test_metrics = {}
    metrics = {
        key: meta.get(key)
        for key in (
            "architecture",
            "pretrained",
            "num_classes",
            "epochs",
            "image_size",
            "batch_size",
            "learning_rate",
            "best_epoch",
            "epochs_run",
            "val_accuracy",
            "test_accuracy",
            "test_macro_f1",
            "test_balanced_accuracy",
            "training_seconds",
            "images_per_second",
            "device",
            "history",
        )
    }
    if metrics["test_balanced_accuracy"] is None:
        metrics["test_balanced_accuracy"] = test_metrics.get("balanced_accuracy")
    metrics["per_class"] = test_metrics.get("per_class")
    return {
        "project_id": str(project_id),
        "project_name": project.name if project else None,
        "status": project.status if project else None,
        "dataset_url": dataset_url,
        "options": options,
        "model_url": model.gcs_url if model else None,
        # The training curves and the test confusion matrix, beside the model (absent for older models).
        "curves_url": meta.get("curves_url"),
        "confusion_url": meta.get("confusion_url"),
        "metrics": metrics,
        "error": (project.metadata.get("error") if project else None),
    }


# More classes than this: the per-class table shows this many, the worst by F1, and counts the rest.
MAX_CLASS_ROWS = 30


def shown_value(value: Any) -> str:
    """An option's value as one types it after `--option key=`: JSON, strings bare."""
    return value if isinstance(value, str) else json.dumps(value)


def _num(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) and not isinstance(value, bool) else "n/a"


def _where(url: str) -> str:
    """A local object as a path people can open; anything else as its URL."""
    try:
        parsed = parse_url(url)
    except InvalidInputError:
        return url
    return str(parsed.path) if isinstance(parsed, LocalURL) else url


def _best_epoch(metrics: dict[str, Any]) -> int | None:
    if isinstance(metrics.get("best_epoch"), int):
        return int(metrics["best_epoch"])
    improved = [row.get("epoch") for row in metrics.get("history") or [] if row.get("best")]
    return improved[-1] if improved else None


def _per_class_lines(per_class: dict[str, Any]) -> list[str]:
    rows = [(name, scores) for name, scores in per_class.items() if isinstance(scores, dict)]
    title = "per class (test split)"
    if len(rows) > MAX_CLASS_ROWS:
        rows.sort(key=lambda row: (_sort_key(row[1].get("f1")), row[0]))
        title = f"per class (test split; the {MAX_CLASS_ROWS} worst by F1 of {len(rows)})"
    shown, rest = rows[:MAX_CLASS_ROWS], rows[MAX_CLASS_ROWS:]
    width = min(max([len("class"), *(len(name) for name, _ in shown)]), 40)
    lines = [title, f"  {'class':<{width}}  precision  recall      F1  support"]
    for name, scores in shown:
        support = scores.get("support")
        lines.append(
            f"  {name:<{width}}  {_num(scores.get('precision')):>9}  {_num(scores.get('recall')):>6}"
            f"  {_num(scores.get('f1')):>6}  {support if isinstance(support, int) else 'n/a':>7}"
        )
    if rest:
        lines.append(
            f"  ... and {len(rest)} more classes, each with F1 >= {_num(rest[0][1].get('f1'))} "
            "(all in the JSON summary)"
        )
    return lines


def _sort_key(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else -1.0


def format_summary(summary: dict[str, Any]) -> str:
    """The demo's outcome for people: what it set, the model, its scores per epoch and per class, and where
    the pictures are. Tolerates models recorded before some of these keys existed."""
    metrics = summary.get("metrics") or {}
    lines = [
        f"project   {summary['project_id']} ({summary['project_name']})",
        f"status    {summary['status']}",
    ]
    if summary.get("options"):
        options = " ".join(f"{key}={shown_value(value)}" for key, value in summary["options"].items())
        lines.append(f"options   {options} (every other option: the project default)")
    if summary.get("model_url"):
        weights = "pretrained" if metrics.get("pretrained") else "from scratch"
        setup = f"{metrics.get('epochs')} epochs at {metrics.get('image_size')} px"
        if metrics.get("batch_size") is not None:
            setup += f", batch {metrics['batch_size']}"
        if metrics.get("learning_rate") is not None:
            setup += f", lr {metrics['learning_rate']:g}"
        best = _best_epoch(metrics)
        scores = f"val {_num(metrics.get('val_accuracy'))}"
        if best is not None:
            scores += f" (best epoch {best})"
        scores += f", test {_num(metrics.get('test_accuracy'))}"
        if metrics.get("test_macro_f1") is not None:
            scores += f", macro-F1 {_num(metrics['test_macro_f1'])}"
        if metrics.get("test_balanced_accuracy") is not None:
            scores += f", balanced {_num(metrics['test_balanced_accuracy'])}"
        lines += [
            f"model     {_where(summary['model_url'])}",
            f"network   {metrics.get('architecture')} ({weights}), {metrics.get('num_classes')} classes, "
            f"{setup} on {metrics.get('device')}",
            f"accuracy  {scores}",
            f"speed     {_num(metrics.get('images_per_second'), 1)} images/s, "
            f"{_num(metrics.get('training_seconds'), 1)} s in all",
        ]
        for row in metrics.get("history") or []:
            mark = "  * best" if best is not None and row.get("epoch") == best else ""
            lines.append(
                f"  epoch {row.get('epoch')}: train_loss {_num(row.get('train_loss'), 4)}  "
                f"val_loss {_num(row.get('val_loss'), 4)}  val_acc {_num(row.get('val_accuracy'))}{mark}"
            )
        if isinstance(metrics.get("per_class"), dict) and metrics["per_class"]:
            lines += _per_class_lines(metrics["per_class"])
    for key, label in (("curves_url", "curves   "), ("confusion_url", "confusion")):
        if summary.get(key):
            lines.append(f"{label} {_where(summary[key])}")
    if summary.get("error"):
        lines.append(f"error     [{summary['error'].get('step')}] {summary['error'].get('message')}")
    return "\n".join(lines)
