"""Classification metrics from labels and predictions: shared by training reports and the monitor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(truth: Sequence[int], predicted: Sequence[int], classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(truth, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return matrix


def classification_metrics(truth: Sequence[int], predicted: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1 and support, and the confusion matrix."""
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} labels but {len(predicted)} predictions")
    matrix = confusion_matrix(truth, predicted, len(labels))
    correct = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1).astype(np.float64)
    predicted_count = matrix.sum(axis=0).astype(np.float64)
    recall = np.divide(correct, support, out=np.zeros_like(correct), where=support > 0)
    precision = np.divide(correct, predicted_count, out=np.zeros_like(correct), where=predicted_count > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(correct), where=denominator > 0)
    total = int(matrix.sum())
    return {
        "n": total,
        "accuracy": float(correct.sum() / total) if total else 0.0,
        "macro_f1": float(f1.mean()) if len(labels) else 0.0,
        "per_class": {
            label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                    "support": int(support[i])}
            for i, label in enumerate(labels)
        },
        "confusion": {"labels": list(labels), "matrix": matrix.tolist()},
    }
