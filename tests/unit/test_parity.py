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
    assert report.failures == ["label agreement 0.7000 is under min_agreement 0.98"]
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
    assert strict.failures == ["int8 accuracy 0.9900 is 1.00 points under fp32 1.0000 (max_accuracy_drop 0.5)"]


def test_cosine_gate_reports_min_and_mean():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(20, 8))
    candidate = reference + rng.normal(scale=0.01, size=reference.shape)
    assert compare_embeddings(reference, candidate, GateThresholds()).passed
    candidate[5] = -reference[5]  # one vector points the other way
    report = compare_embeddings(reference, candidate, GateThresholds(min_cosine=0.95))
    assert report.figures["min_cosine"] == pytest.approx(-1.0, abs=1e-6)
    assert report.failures[0].startswith("minimum cosine -1.0000 is under min_cosine 0.95 (mean 0.")


def _with_cosines(cosines: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Reference and candidate vectors (2-d) whose row-wise cosines are exactly ``cosines``."""
    angles = np.arccos(np.asarray(cosines))
    reference = np.tile([1.0, 0.0], (len(cosines), 1))
    return reference, np.stack([np.cos(angles), np.sin(angles)], axis=1)


def test_cosine_gate_is_on_the_worst_text_not_the_mean():
    # 19 texts almost identical, one far off: the mean (0.9781) clears 0.95, the minimum (0.60) does not.
    reference, candidate = _with_cosines([0.998] * 19 + [0.60])
    report = compare_embeddings(reference, candidate, GateThresholds(min_cosine=0.95))
    assert report.figures["mean_cosine"] == pytest.approx(0.9781, abs=1e-5)
    assert report.figures["mean_cosine"] > 0.95
    assert report.figures["min_cosine"] == pytest.approx(0.60)
    assert not report.passed
    assert report.failures == ["minimum cosine 0.6000 is under min_cosine 0.95 (mean 0.9781)"]


def test_cosine_gate_bound_sits_at_the_worst_text():
    reference, candidate = _with_cosines([0.99, 0.96, 0.955])  # (float32 vectors: exact to about 1e-7)
    assert compare_embeddings(reference, candidate, GateThresholds(min_cosine=0.955 - 1e-5)).passed
    assert not compare_embeddings(reference, candidate, GateThresholds(min_cosine=0.955 + 1e-5)).passed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_accuracy_drop": -1}, "max_accuracy_drop must be between 0 and 100"),
        ({"min_agreement": 1.5}, "min_agreement must be a fraction in"),
        ({"min_cosine": 2}, "min_cosine must be in"),
    ],
)
def test_thresholds_are_validated_and_name_their_argument(kwargs, message):
    with pytest.raises(InvalidBuildConfigError, match=message) as caught:
        GateThresholds(**kwargs)
    (field,) = kwargs
    assert caught.value.field == field and str(caught.value) == f"{field} {caught.value.detail}"
    assert "--" not in str(caught.value)  # the library speaks of its arguments; a CLI names its flags
    assert caught.value.exit_status == 2 and caught.value.code == "invalid_build_config"
