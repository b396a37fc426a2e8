"""What `training-agent demo` prints: the project's outcome read back from the records (`summarize`), and the
same as text (`format_summary`): options, accuracy with the best epoch marked, per-class precision/recall,
and where the model and its pictures are."""

from __future__ import annotations

import json
import uuid
from typing import Any

from training_agent.core.errors import InvalidInputError
from training_agent.core.records import RecordsStore
from training_agent.core.storage.urls import LocalURL, parse_url


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
            "precision",
            "world_size",
            "nodes",
            "global_batch_size",
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


def _device(metrics: dict[str, Any]) -> str:
    """Where it trained: the device, and under torchrun the processes and the batch they made together."""
    device = str(metrics.get("device"))
    if (metrics.get("world_size") or 1) > 1:
        return f"{metrics['world_size']} processes ({device}), global batch {metrics['global_batch_size']}"
    return device


def _scores(metrics: dict[str, Any], best: int | None) -> str:
    scores = f"val {_num(metrics.get('val_accuracy'))}"
    if best is not None:
        scores += f" (best epoch {best})"
    scores += f", test {_num(metrics.get('test_accuracy'))}"
    if metrics.get("test_macro_f1") is not None:
        scores += f", macro-F1 {_num(metrics['test_macro_f1'])}"
    if metrics.get("test_balanced_accuracy") is not None:
        scores += f", balanced {_num(metrics['test_balanced_accuracy'])}"
    return scores


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
        scores = _scores(metrics, best)
        lines += [
            f"model     {_where(summary['model_url'])}",
            f"network   {metrics.get('architecture')} ({weights}), {metrics.get('num_classes')} classes, "
            f"{setup} on {_device(metrics)}",
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
