"""The monitor's tests on simulated streams whose truth is known, at the default windows and alphas of
ferry.runtime.stats: a healthy model must almost never be flagged, a degraded one must be.

(a) Synthetic: a reference sample and live windows from one known distribution (confidence ~ Beta, correct ~
Bernoulli(confidence), three labels, log-normal token lengths), then from a shifted one.
(b) The real scenario of DRIFT.md (tests/fixtures/drift_scenario.json.gz): a MiniLM trained without the Coachella
tweets; its validation split is the reference, its test split the healthy traffic, the Coachella tweets the shift.

Live traffic is a stream: each window is drawn with replacement from the traffic's rows (as if from an endless
stream of them), and each is tested once, as the monitor tests each non-overlapping window once. Seeds are fixed.
A false-alarm rate must stay at or under 1% over 1,000 windows, and the alphas are chosen well below that (0.1%
to 0.2%): at a true 1%, more than 10 alarms in 1,000 windows happens 42% of the time.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ferry.runtime import stats
from ferry.runtime.stats import (
    ACCURACY_ALPHA,
    ACCURACY_WINDOW,
    DRIFT_TESTS,
    DRIFT_WINDOW,
    ReferenceSample,
    WindowRows,
    accuracy_drop_test,
    binomial_cdf,
    drift_tests,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "drift_scenario.json.gz"
HEALTHY_WINDOWS = 1000
SHIFTED_WINDOWS = 200
MAX_FALSE_ALARMS = 0.01
MIN_DETECTION = 0.90
LABELS = ("negative", "neutral", "positive")


def _synthetic(rng: np.random.Generator, rows: int, shifted: bool = False) -> dict[str, np.ndarray]:
    """Rows of a 3-class model: top-label confidence in [1/3, 1], right as often as it says (healthy: accuracy
    0.905), or, shifted, less sure, less right than it says (accuracy 0.73), another label mix, longer texts."""
    confidence = np.round(1 / 3 + 2 / 3 * rng.beta(3 if shifted else 6, 1, rows), 5)
    correct = (rng.random(rows) < confidence - (0.1 if shifted else 0.0)).astype(np.int64)
    predicted = rng.choice(3, rows, p=[0.3, 0.25, 0.45] if shifted else [0.55, 0.25, 0.2])
    token_length = np.clip(np.round(rng.lognormal(3.6 if shifted else 3.3, 0.5, rows)), 3, 256).astype(np.int64)
    return {"confidence": confidence, "predicted": predicted, "token_length": token_length, "correct": correct}


def _windows(columns: dict[str, np.ndarray], count: int, size: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``count`` windows of ``size`` rows drawn with replacement, all at once."""
    rows = len(columns["confidence"])
    picks = np.random.default_rng(seed).integers(0, rows, size=(count, size))
    return [{name: column[pick] for name, column in columns.items()} for pick in picks]


def _drift_rates(reference: ReferenceSample, windows: list[dict[str, np.ndarray]]) -> dict[str, float]:
    fired = dict.fromkeys(DRIFT_TESTS, 0)
    for window in windows:
        rows = WindowRows(confidence=window["confidence"], predicted=window["predicted"],
                          token_length=window["token_length"])
        for test in drift_tests(reference, rows):
            fired[test.name] += test.fired
    return {name: count / len(windows) for name, count in fired.items()}


def _accuracy_rate(reference: ReferenceSample, correct: np.ndarray, count: int, seed: int) -> float:
    """The share of ``count`` windows of ACCURACY_WINDOW labels (drawn from ``correct``) that the test flags."""
    picks = np.random.default_rng(seed).integers(0, len(correct), size=(count, ACCURACY_WINDOW))
    accuracy = reference.accuracy
    assert accuracy is not None
    return float(np.mean([accuracy_drop_test(int(hits), ACCURACY_WINDOW, accuracy, reference.rows).fired
                          for hits in correct[picks].sum(axis=1)]))


def test_the_accuracy_test_keeps_its_alpha_exactly():
    """At H0's boundary, P(fire) = P(X <= largest count that fires), which must not exceed alpha."""
    for reference_accuracy in (0.6, 0.85, 0.913, 0.97):
        test = accuracy_drop_test(0, ACCURACY_WINDOW, reference_accuracy, 2000)
        firing = [k for k in range(ACCURACY_WINDOW + 1)
                  if accuracy_drop_test(k, ACCURACY_WINDOW, reference_accuracy, 2000).fired]
        assert firing == list(range(len(firing)))  # fewer right never fires less
        assert binomial_cdf(firing[-1], ACCURACY_WINDOW, test.tested_against) <= ACCURACY_ALPHA


def test_the_docstring_arithmetic():
    """alpha 0.002, 150-label windows, 1,000 labels a day: 200 windows and 0.4 false alarms a month."""
    windows_a_month = 1000 * 30 / ACCURACY_WINDOW
    assert windows_a_month == 200
    assert ACCURACY_ALPHA * windows_a_month == pytest.approx(0.4)
    assert DRIFT_WINDOW >= stats.MIN_DRIFT_ROWS


# ------------------------------------------------------------------------------------------------ (a) synthetic


@pytest.fixture(scope="module")
def synthetic_reference() -> ReferenceSample:
    return ReferenceSample.from_columns(_synthetic(np.random.default_rng(20), 2200), LABELS)


def test_synthetic_healthy_traffic_raises_no_alarm(synthetic_reference):
    healthy = _synthetic(np.random.default_rng(21), HEALTHY_WINDOWS * DRIFT_WINDOW)
    windows = [{name: column[start : start + DRIFT_WINDOW] for name, column in healthy.items()}
               for start in range(0, HEALTHY_WINDOWS * DRIFT_WINDOW, DRIFT_WINDOW)]  # fresh rows each window
    rates = _drift_rates(synthetic_reference, windows)
    assert set(rates) == set(DRIFT_TESTS)
    assert all(rate <= MAX_FALSE_ALARMS for rate in rates.values()), rates
    labels = _synthetic(np.random.default_rng(22), HEALTHY_WINDOWS * ACCURACY_WINDOW)["correct"]
    by_window = labels.reshape(HEALTHY_WINDOWS, ACCURACY_WINDOW).sum(axis=1)
    accuracy = synthetic_reference.accuracy
    assert accuracy is not None
    fired = np.mean([accuracy_drop_test(int(hits), ACCURACY_WINDOW, accuracy, synthetic_reference.rows).fired
                     for hits in by_window])
    assert fired <= MAX_FALSE_ALARMS


def test_synthetic_shift_is_detected_by_every_test(synthetic_reference):
    shifted = _synthetic(np.random.default_rng(23), 20_000, shifted=True)
    rates = _drift_rates(synthetic_reference, _windows(shifted, SHIFTED_WINDOWS, DRIFT_WINDOW, seed=24))
    assert all(rate >= MIN_DETECTION for rate in rates.values()), rates
    assert _accuracy_rate(synthetic_reference, shifted["correct"], SHIFTED_WINDOWS, seed=25) >= MIN_DETECTION


# ------------------------------------------------------------------------------------------- (b) the real drift


@pytest.fixture(scope="module")
def scenario() -> dict[str, Any]:
    if not FIXTURE.exists():
        pytest.skip(f"{FIXTURE.name} is not there (the lead's drift fixture)")
    with gzip.open(FIXTURE, "rt", encoding="utf-8") as file:
        data: dict[str, Any] = json.load(file)
    parts = {name: {column: np.asarray(values) for column, values in data[name].items() if isinstance(values, list)}
             for name in ("reference", "in_domain", "shifted")}
    return {"reference": ReferenceSample.from_columns(data["reference"], data["labels"]),
            "in_domain": parts["in_domain"], "shifted": parts["shifted"]}


def test_the_scenario_is_the_one_measured(scenario):
    """DRIFT.md: about 0.91 in domain, 0.78 or below on Coachella; the reference near the in-domain figure."""
    reference = scenario["reference"]
    assert reference.accuracy == pytest.approx(0.913, abs=0.015)
    assert scenario["in_domain"]["correct"].mean() == pytest.approx(0.913, abs=0.01)
    assert scenario["shifted"]["correct"].mean() <= 0.80
    standard_error = math.sqrt(reference.accuracy * (1 - reference.accuracy) / reference.rows)
    assert standard_error < 0.007


def test_real_in_domain_traffic_raises_no_alarm(scenario):
    reference, in_domain = scenario["reference"], scenario["in_domain"]
    rates = _drift_rates(reference, _windows(in_domain, HEALTHY_WINDOWS, DRIFT_WINDOW, seed=30))
    assert set(rates) == set(DRIFT_TESTS)
    assert all(rate <= MAX_FALSE_ALARMS for rate in rates.values()), rates
    assert _accuracy_rate(reference, in_domain["correct"], HEALTHY_WINDOWS, seed=31) <= MAX_FALSE_ALARMS


def test_real_coachella_shift_is_detected(scenario):
    reference, shifted = scenario["reference"], scenario["shifted"]
    assert _accuracy_rate(reference, shifted["correct"], SHIFTED_WINDOWS, seed=32) >= MIN_DETECTION
    rates = _drift_rates(reference, _windows(shifted, SHIFTED_WINDOWS, DRIFT_WINDOW, seed=33))
    assert rates["confidence_psi"] >= MIN_DETECTION, rates
