"""Classification metrics from a confusion matrix: accuracy, balanced accuracy, macro F1, per-class
precision/recall/F1."""

from __future__ import annotations

from typing import Any

import torch


def confusion_matrix(targets: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[true class, predicted class] counts."""
    flat = targets.to(torch.int64) * num_classes + predictions.to(torch.int64)
    return torch.bincount(flat, minlength=num_classes**2).view(num_classes, num_classes)


def _ratio(numerator: float, denominator: float) -> float:
    # A class never predicted (or absent) has no defined precision (recall); 0 is sklearn's convention too.
    return numerator / denominator if denominator else 0.0


def classification_report(matrix: torch.Tensor, class_names: list[str]) -> dict[str, Any]:
    """What goes into models.metadata: rounded so that the JSON stays readable."""
    counts = matrix.to(torch.float64)
    true_positives = counts.diagonal()
    per_class = {}
    f1_scores, recalls = [], []
    for i, name in enumerate(class_names):
        tp = float(true_positives[i])
        precision = _ratio(tp, float(counts[:, i].sum()))
        recall = _ratio(tp, float(counts[i].sum()))
        f1 = _ratio(2 * precision * recall, precision + recall)
        f1_scores.append(f1)
        if counts[i].sum() > 0:
            recalls.append(recall)
        per_class[name] = {
            "precision": round(precision, 6),
            "recall": round(recall, 6),
            "f1": round(f1, 6),
            "support": int(counts[i].sum()),
        }
    total = float(counts.sum())
    return {
        "accuracy": round(_ratio(float(true_positives.sum()), total), 6),
        "macro_f1": round(sum(f1_scores) / len(f1_scores), 6) if f1_scores else 0.0,
        # The mean recall over the classes present: what accuracy would be on a balanced test split.
        "balanced_accuracy": round(sum(recalls) / len(recalls), 6) if recalls else 0.0,
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }
