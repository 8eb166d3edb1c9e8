from __future__ import annotations

import pytest

from ferry.runtime.metrics import classification_metrics


def test_metrics_by_hand():
    # truth:     a a a b b c ; predicted: a a b b c c
    metrics = classification_metrics([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], ["a", "b", "c"])
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["confusion"]["matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    a, b, c = (metrics["per_class"][k] for k in "abc")
    assert (a["precision"], a["recall"]) == (1.0, pytest.approx(2 / 3))
    assert (b["precision"], b["recall"]) == (0.5, 0.5)
    assert (c["precision"], c["recall"]) == (0.5, 1.0)
    f1 = [2 * 1 * (2 / 3) / (1 + 2 / 3), 0.5, 2 * 0.5 / 1.5]
    assert metrics["macro_f1"] == pytest.approx(sum(f1) / 3)


def test_a_class_never_predicted_has_zero_precision_not_nan():
    metrics = classification_metrics([0, 1], [0, 0], ["a", "b"])
    assert metrics["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 labels but 1 predictions"):
        classification_metrics([0, 1], [0], ["a", "b"])
