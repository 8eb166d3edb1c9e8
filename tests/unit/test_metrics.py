from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ferry.metrics import ClassificationMetrics, ClassMetrics, classification_metrics


def test_metrics_by_hand():
    # truth:     a a a b b c ; predicted: a a b b c c
    metrics = classification_metrics([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], ["a", "b", "c"])
    assert metrics.n == 6
    assert metrics.accuracy == pytest.approx(4 / 6)
    assert metrics.matrix == ((2, 1, 0), (0, 1, 1), (0, 0, 1))
    a, b, c = (metrics.per_class[k] for k in "abc")
    assert (a.precision, a.recall) == (1.0, pytest.approx(2 / 3))
    assert (b.precision, b.recall) == (0.5, 0.5)
    assert (c.precision, c.recall) == (0.5, 1.0)
    assert (a.support, b.support, c.support) == (3, 2, 1)
    f1 = [2 * 1 * (2 / 3) / (1 + 2 / 3), 0.5, 2 * 0.5 / 1.5]
    assert metrics.macro_f1 == pytest.approx(sum(f1) / 3)
    assert metrics.recall() == {"a": pytest.approx(2 / 3), "b": 0.5, "c": 1.0}


def test_a_class_never_predicted_has_zero_precision_not_nan():
    metrics = classification_metrics([0, 1], [0, 0], ["a", "b"])
    assert metrics.per_class["b"] == ClassMetrics(precision=0.0, recall=0.0, f1=0.0, support=1)
    assert metrics.to_dict()["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_no_texts_is_zero_not_a_division_error():
    metrics = classification_metrics([], [], ["a", "b"])
    assert (metrics.n, metrics.accuracy, metrics.macro_f1) == (0, 0.0, 0.0)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 labels but 1 predictions"):
        classification_metrics([0, 1], [0], ["a", "b"])


def test_the_written_form_reads_back_unchanged():
    metrics = classification_metrics([0, 0, 1, 2, 2], [0, 1, 1, 2, 0], ["neg", "neu", "pos"])
    written = metrics.to_dict()
    assert written["confusion"] == {"labels": ["neg", "neu", "pos"], "matrix": [[1, 1, 0], [0, 1, 0], [1, 0, 1]]}
    assert ClassificationMetrics.from_dict(written, "report.json", "splits.test") == metrics


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("accuracy"), "report.json: missing field(s) of splits.test accuracy"),
        (lambda d: d.update(accuracy="0.9"), "report.json: splits.test.accuracy must be a number, got '0.9'"),
        (lambda d: d["per_class"]["a"].update(support=-1),
         "splits.test.per_class.a.support must be an integer >= 0, got -1"),
        (lambda d: d["confusion"].update(matrix=[[1, 0]]), "splits.test.confusion: the matrix must be 2 x 2"),
    ],
)
def test_a_malformed_written_form_names_the_field(change, message):
    written = classification_metrics([0, 1], [0, 1], ["a", "b"]).to_dict()
    change(written)
    with pytest.raises(ValueError) as caught:
        ClassificationMetrics.from_dict(written, "report.json", "splits.test")
    assert message in str(caught.value)


def test_the_module_imports_nothing_heavy():
    """The monitor will import it in Lambda: only the standard library and ferry.runtime's light modules."""
    source = Path(__file__).resolve().parents[2] / "src" / "ferry" / "metrics.py"
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).partition(".")[0]
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"__future__", "collections", "dataclasses", "typing", "ferry"}
