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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from training_agent.core.errors import InvalidInputError, TrainingAgentError
from training_agent.core.records import ProjectStatus, RecordsStore
from training_agent.core.settings import Settings
from training_agent.core.storage import ObjectStorage
from training_agent.synthetic import write_shapes_zip

logger = logging.getLogger("training_agent.demo")
_POLL_S = 0.5


class DemoError(TrainingAgentError):
    """The demo could not start or follow its run."""


@dataclass(frozen=True)
class DemoOptions:
    dataset: str | None = None
    model: str = "resnet18"
    epochs: int = 3
    image_size: int = 64
    batch_size: int = 16
    learning_rate: float = 0.001
    # None: use cached pretrained weights when present, else train from scratch.
    pretrained: bool | None = None
    api_url: str | None = None  # None: serve the API in-process for the demo
    timeout_s: float = 3600.0


def check_options(options: DemoOptions) -> None:
    """Refuse a model or a dataset that cannot work before anything is created (project, server, run)."""
    from training_agent.trainer.model import available_models  # torchvision: imported only when needed

    known = available_models()
    if options.model not in known:
        close = difflib.get_close_matches(options.model, known, n=3)
        hint = (
            f"did you mean {', '.join(close)}?" if close else "try resnet18, efficientnet_b0 or convnext_tiny"
        )
        raise InvalidInputError(f"--model {options.model} is not a torchvision classification model; {hint}")
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
    pretrained = (
        pretrained_weights_cached(options.model) if options.pretrained is None else options.pretrained
    )
    dataset_url = _stage_dataset(storage, options.dataset, run_tag)
    metadata = {
        "preferred_model": options.model,
        "epochs": options.epochs,
        "image_size": options.image_size,
        "batch_size": options.batch_size,
        "learning_rate": options.learning_rate,
        "pretrained": pretrained,
    }
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
    summary = summarize(records, project.id, dataset_url)
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


def summarize(records: RecordsStore, project_id: uuid.UUID, dataset_url: str) -> dict[str, Any]:
    """The project's outcome as the other agents see it in the records."""
    project = records.get_project(project_id)
    models = records.list_models(project_id)
    model = models[-1] if models else None
    meta = model.metadata if model else {}
    return {
        "project_id": str(project_id),
        "project_name": project.name if project else None,
        "status": project.status if project else None,
        "dataset_url": dataset_url,
        "model_url": model.gcs_url if model else None,
        "metrics": {
            key: meta.get(key)
            for key in (
                "architecture",
                "pretrained",
                "num_classes",
                "epochs",
                "image_size",
                "val_accuracy",
                "test_accuracy",
                "training_seconds",
                "images_per_second",
                "device",
                "history",
            )
        },
        "error": (project.metadata.get("error") if project else None),
    }


def format_summary(summary: dict[str, Any]) -> str:
    metrics = summary["metrics"]
    lines = [
        f"project   {summary['project_id']} ({summary['project_name']})",
        f"status    {summary['status']}",
    ]
    if summary["model_url"]:
        weights = "pretrained" if metrics["pretrained"] else "from scratch"
        lines += [
            f"model     {summary['model_url']}",
            f"network   {metrics['architecture']} ({weights}), {metrics['num_classes']} classes, "
            f"{metrics['epochs']} epochs at {metrics['image_size']} px on {metrics['device']}",
            f"accuracy  val {metrics['val_accuracy']:.3f}, test {metrics['test_accuracy']:.3f}",
            f"speed     {metrics['images_per_second']:.1f} images/s, "
            f"{metrics['training_seconds']:.1f} s in all",
        ]
        for row in metrics["history"] or []:
            lines.append(
                f"  epoch {row['epoch']}: train_loss {row['train_loss']:.4f}  "
                f"val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.3f}"
            )
    if summary["error"]:
        lines.append(f"error     [{summary['error'].get('step')}] {summary['error'].get('message')}")
    return "\n".join(lines)
