from __future__ import annotations

import numpy as np
import pytest

from ferry.layer import GateThresholds, InvalidBuildConfigError
from ferry.layer.parity import compare_classification, compare_embeddings


def test_identical_logits_pass_with_exact_figures():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.5, 0.4]])
    report = compare_classification(logits, logits.copy(), GateThresholds(), true_labels=[0, 1, 1, 0])
    assert report.passed
    assert report.figures["agreement"] == 1.0
    assert report.figures["accuracy_fp32"] == report.figures["accuracy_int8"] == 0.75
    assert report.figures["max_abs_logit_diff"] == 0.0


def test_disagreement_fails_with_the_figure_in_the_message():
    reference = np.array([[1.0, 0.0]] * 10)
    candidate = reference.copy()
    candidate[:3] = [0.0, 1.0]  # 3 of 10 flip
    report = compare_classification(reference, candidate, GateThresholds(min_agreement=0.98))
    assert not report.passed
    assert report.figures["agreement"] == pytest.approx(0.7)
    assert report.failures == ["label agreement 0.7000 is under --min-agreement 0.98"]
    assert report.figures["max_abs_logit_diff"] == pytest.approx(1.0)


def test_accuracy_drop_is_in_percentage_points():
    reference = np.array([[0.0, 1.0]] * 100)
    candidate = reference.copy()
    candidate[0] = [1.0, 0.0]  # int8 gets one more wrong: -1 point
    truth = [1] * 100
    lenient = compare_classification(reference, candidate, GateThresholds(max_accuracy_drop=1.0, min_agreement=0.9),
                                     truth)
    assert lenient.passed and lenient.figures["accuracy_drop_points"] == pytest.approx(1.0)
    strict = compare_classification(reference, candidate, GateThresholds(max_accuracy_drop=0.5, min_agreement=0.9),
                                    truth)
    assert strict.failures == ["int8 accuracy 0.9900 is 1.00 points under fp32 1.0000 (--max-accuracy-drop 0.5)"]


def test_cosine_gate_reports_min_and_mean():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(20, 8))
    candidate = reference + rng.normal(scale=0.01, size=reference.shape)
    assert compare_embeddings(reference, candidate, GateThresholds()).passed
    candidate[5] = -reference[5]  # one vector points the other way
    report = compare_embeddings(reference, candidate, GateThresholds(min_cosine=0.95))
    assert report.figures["min_cosine"] == pytest.approx(-1.0, abs=1e-6)
    assert report.failures[0].startswith("minimum cosine -1.0000 is under --min-cosine 0.95 (mean 0.")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_accuracy_drop": -1}, "--max-accuracy-drop must be between 0 and 100"),
        ({"min_agreement": 1.5}, "--min-agreement must be a fraction in"),
        ({"min_cosine": 2}, "--min-cosine must be in"),
    ],
)
def test_thresholds_are_validated(kwargs, message):
    with pytest.raises(InvalidBuildConfigError, match=message):
        GateThresholds(**kwargs)
