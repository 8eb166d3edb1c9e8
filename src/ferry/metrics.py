"""Classification metrics from true and predicted classes: the figures of a training report, and of the monitor
that will measure a served model on the labels its users send back.

Pure Python (no numpy): the monitor runs in Lambda, where this should cost nothing to import, and the counts
involved (thousands of texts, a handful of classes) need no vector maths. Training imports it too, so that
both measure alike. It imports only :mod:`ferry.runtime.fields`, which the runtime layer carries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ferry.runtime.fields import JsonFields


@dataclass(frozen=True)
class ClassMetrics:
    """One class: of the texts predicted as it, the share that are (precision); of the texts that are it, the
    share predicted as it (recall); their harmonic mean (F1); and how many texts are it (support)."""

    precision: float
    recall: float
    f1: float
    support: int

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1, "support": self.support}


@dataclass(frozen=True)
class ClassificationMetrics:
    """Accuracy, macro-F1 (the mean of the classes' F1, each class counting alike), each class's figures, and
    the confusion matrix (rows are true classes, columns predicted classes, both in ``labels`` order)."""

    n: int
    accuracy: float
    macro_f1: float
    per_class: Mapping[str, ClassMetrics]
    labels: tuple[str, ...]
    matrix: tuple[tuple[int, ...], ...]

    def recall(self) -> dict[str, float]:
        return {label: figures.recall for label, figures in self.per_class.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "per_class": {label: figures.to_dict() for label, figures in self.per_class.items()},
            "confusion": {"labels": list(self.labels), "matrix": [list(row) for row in self.matrix]},
        }

    @classmethod
    def from_dict(
        cls, data: Any, source: str, where: str = "", *, error: type[Exception] = ValueError
    ) -> ClassificationMetrics:
        """Read back ``to_dict()``; a wrong field raises ``error`` naming ``source`` and the field's path."""
        fields = JsonFields(data, source, where, error=error)
        fields.require("n", "accuracy", "macro_f1", "per_class")
        per_class_fields = fields.nested("per_class")
        per_class = {label: _class_metrics(per_class_fields.nested(label)) for label in per_class_fields.data}
        confusion = fields.raw("confusion")
        labels: tuple[str, ...]
        matrix: tuple[tuple[int, ...], ...]
        if confusion is None:
            labels, matrix = tuple(per_class), ()
        else:
            confusion_fields = fields.nested("confusion")
            labels, matrix = confusion_fields.texts("labels"), confusion_fields.count_rows("matrix")
            if len(matrix) != len(labels) or any(len(row) != len(labels) for row in matrix):
                raise confusion_fields.fail(f"the matrix must be {len(labels)} x {len(labels)}, one row per label")
        return cls(
            n=fields.required_integer("n"),
            accuracy=fields.required_number("accuracy"),
            macro_f1=fields.required_number("macro_f1"),
            per_class=per_class,
            labels=labels,
            matrix=matrix,
        )


def _class_metrics(fields: JsonFields) -> ClassMetrics:
    fields.require("precision", "recall", "f1", "support")
    return ClassMetrics(
        precision=fields.required_number("precision"),
        recall=fields.required_number("recall"),
        f1=fields.required_number("f1"),
        support=fields.required_integer("support"),
    )


def confusion_matrix(truth: Sequence[int], predicted: Sequence[int], classes: int) -> list[list[int]]:
    """Rows are true classes, columns predicted classes."""
    matrix = [[0] * classes for _ in range(classes)]
    for true_class, predicted_class in zip(truth, predicted, strict=True):
        matrix[int(true_class)][int(predicted_class)] += 1
    return matrix


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole > 0 else 0.0  # a class never predicted (or absent) scores 0, not NaN


def classification_metrics(
    truth: Sequence[int], predicted: Sequence[int], labels: Sequence[str]
) -> ClassificationMetrics:
    """Accuracy, macro-F1, per-class precision/recall/F1 and support, and the confusion matrix.

    ``truth`` and ``predicted`` are class indexes into ``labels``.
    """
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} labels but {len(predicted)} predictions")
    matrix = confusion_matrix(truth, predicted, len(labels))
    per_class: dict[str, ClassMetrics] = {}
    for index, label in enumerate(labels):
        correct = matrix[index][index]
        support = sum(matrix[index])
        predicted_count = sum(row[index] for row in matrix)
        recall, precision = _ratio(correct, support), _ratio(correct, predicted_count)
        f1 = _ratio(2 * precision * recall, precision + recall)
        per_class[label] = ClassMetrics(precision=precision, recall=recall, f1=f1, support=support)
    total = len(truth)
    correct_total = sum(matrix[index][index] for index in range(len(labels)))
    return ClassificationMetrics(
        n=total,
        accuracy=_ratio(correct_total, total),
        macro_f1=sum(figures.f1 for figures in per_class.values()) / len(labels) if labels else 0.0,
        per_class=per_class,
        labels=tuple(labels),
        matrix=tuple(tuple(row) for row in matrix),
    )
