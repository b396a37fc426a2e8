"""Test metrics against scikit-learn's reference implementation."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    precision_recall_fscore_support,
)
from sklearn.metrics import (
    confusion_matrix as sk_confusion,
)

from training_agent.trainer.metrics import classification_report, confusion_matrix

labels = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=60)


@settings(max_examples=60, deadline=None)
@given(labels)
def test_report_matches_scikit_learn(pairs: list[tuple[int, int]]) -> None:
    y_true = [t for t, _ in pairs]
    y_pred = [p for _, p in pairs]
    matrix = confusion_matrix(torch.tensor(y_true), torch.tensor(y_pred), 4)
    report = classification_report(matrix, ["a", "b", "c", "d"])
    assert report["confusion_matrix"] == sk_confusion(y_true, y_pred, labels=[0, 1, 2, 3]).tolist()
    assert abs(report["accuracy"] - accuracy_score(y_true, y_pred)) < 1e-6
    macro = f1_score(y_true, y_pred, labels=[0, 1, 2, 3], average="macro", zero_division=0)
    assert abs(report["macro_f1"] - macro) < 1e-6
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=[0, 1, 2, 3], zero_division=0
    )
    for i, name in enumerate("abcd"):
        row = report["per_class"][name]
        assert abs(row["precision"] - precision[i]) < 1e-6
        assert abs(row["recall"] - recall[i]) < 1e-6
        assert abs(row["f1"] - f1[i]) < 1e-6
        assert row["support"] == support[i]
