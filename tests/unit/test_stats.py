"""The monitor's statistics (ferry.runtime.stats), each against values computed by hand or independently: exact
fractions for the binomial, a hand PAV, np.histogram for what open bins must keep."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest

from ferry.runtime import stats
from ferry.runtime.stats import (
    Calibration,
    ReferenceSample,
    WindowRows,
    accuracy_drop_test,
    binomial_cdf,
    bootstrap_interval,
    drift_tests,
    estimated_accuracy,
    estimated_accuracy_null,
    isotonic,
    js_divergence,
    label_mix_statistic,
    normal_quantile,
    null_threshold,
    null_thresholds,
    open_bin_counts,
    psi,
    psi_statistic,
    quantile_edges,
    wilson_interval,
)

# ------------------------------------------------------------------------------------------------- binning


def test_open_bins_keep_what_np_histogram_drops():
    edges = (1.0, 2.0, 3.0, 4.0)
    values = [-5.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.9, 4.0, 9.0, 100.0]
    histogram, _ = np.histogram(values, bins=edges)
    assert histogram.sum() == 6  # -5, 0.5 and 9, 100 fall outside [1, 4]: np.histogram drops them
    counts = open_bin_counts(values, edges)
    assert counts.tolist() == [4, 2, 4]  # below 2 | [2, 3) | 3 and above
    assert counts.sum() == len(values)


def test_a_value_on_an_interior_edge_counts_in_the_bin_above():
    assert open_bin_counts([2.0, 3.0], (1.0, 2.0, 3.0, 4.0)).tolist() == [0, 1, 1]


def test_open_bins_refuse_bad_edges():
    with pytest.raises(ValueError, match="at least 2 edges"):
        open_bin_counts([1.0], (1.0,))
    with pytest.raises(ValueError, match="non-decreasing"):
        open_bin_counts([1.0], (1.0, 3.0, 2.0))


def test_quantile_edges_by_hand():
    assert quantile_edges(range(11), bins=10) == tuple(float(value) for value in range(11))
    # positions (j * 9) // 3 of 0..9: 0, 3, 6, 9
    assert quantile_edges(range(10), bins=3) == (0.0, 3.0, 6.0, 9.0)


def test_quantile_edges_collapse_ties_and_keep_min_and_max():
    values = [1] * 50 + [2] * 30 + [3] * 15 + [40] * 5
    edges = quantile_edges(values, bins=10)
    assert edges == (1.0, 2.0, 3.0, 40.0)
    assert np.all(np.diff(edges) > 0)
    assert open_bin_counts(values, edges).tolist() == [50, 30, 20]
    assert quantile_edges([7, 7, 7]) == (7.0, 7.0)  # a constant: one bin
    assert open_bin_counts([6, 7, 8], (7.0, 7.0)).tolist() == [3]


def test_quantile_edges_refuse_nothing_and_nonsense():
    with pytest.raises(ValueError, match="at least one value"):
        quantile_edges([])
    with pytest.raises(ValueError, match="finite"):
        quantile_edges([1.0, math.nan])
    with pytest.raises(ValueError, match="bins"):
        quantile_edges([1.0], bins=0)


# ------------------------------------------------------------------------------------------------ divergences


def test_psi_by_hand():
    expected, actual = [10, 20, 30], [30, 20, 10]
    p = [(c + 0.5) / 61.5 for c in expected]
    q = [(c + 0.5) / 61.5 for c in actual]
    by_hand = sum((b - a) * math.log(b / a) for a, b in zip(p, q, strict=True))
    assert psi(expected, actual) == pytest.approx(by_hand, rel=1e-12)
    assert psi(actual, expected) == pytest.approx(by_hand, rel=1e-12)  # symmetric
    assert psi(expected, expected) == 0.0
    assert psi([1, 2, 3], [2, 4, 6], smoothing=0) == pytest.approx(0.0, abs=1e-15)  # shares, not counts


def test_psi_with_empty_bins_is_finite_and_refuses_nonsense():
    value = psi([100, 0, 0, 50], [0, 0, 40, 10])
    assert math.isfinite(value) and value > 1
    assert psi([1, 0], [0, 1], smoothing=0) == math.inf
    assert psi([1, 0], [1, 0], smoothing=0) == 0.0  # empty on both sides: no evidence either way
    with pytest.raises(ValueError, match="same non-zero length"):
        psi([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="non-negative"):
        psi([1, -2], [1, 2])
    with pytest.raises(ValueError, match="smoothing"):
        psi([1, 2], [1, 2], smoothing=-1)


def test_js_divergence_by_hand():
    # p = (1, 0), q = (1/2, 1/2), m = (3/4, 1/4): KL(p||m) = log2(4/3), KL(q||m) = (log2(2/3) + log2(2)) / 2
    by_hand = (math.log2(4 / 3) + (math.log2(2 / 3) + 1) / 2) / 2
    assert js_divergence([4, 0], [2, 2], smoothing=0) == pytest.approx(by_hand, rel=1e-12)
    assert js_divergence([5, 0], [0, 5], smoothing=0) == pytest.approx(1.0)
    assert js_divergence([3, 4, 5], [3, 4, 5]) == 0.0
    smoothed = js_divergence([5, 0], [0, 5])
    assert 0 < smoothed < 1
    assert js_divergence([0, 5], [5, 0]) == pytest.approx(smoothed)


# ------------------------------------------------------------------------------------------ exact and interval


def _cdf_by_fractions(k: int, n: int, p: float) -> float:
    exact = Fraction(p)
    return float(sum(math.comb(n, i) * exact**i * (1 - exact) ** (n - i) for i in range(k + 1)))


@pytest.mark.parametrize("p", [0.01, 0.3, 0.5, 0.907, 0.999])
def test_binomial_cdf_against_exact_fractions(p):
    for n in (1, 2, 7, 30, 45):
        for k in range(n + 1):
            assert binomial_cdf(k, n, p) == pytest.approx(_cdf_by_fractions(k, n, p), rel=1e-9, abs=1e-300)


def test_binomial_cdf_edges():
    assert binomial_cdf(-1, 10, 0.5) == 0.0
    assert binomial_cdf(10, 10, 0.5) == 1.0
    assert binomial_cdf(0, 0, 0.5) == 1.0
    assert binomial_cdf(3, 10, 0.0) == 1.0
    assert binomial_cdf(3, 10, 1.0) == 0.0
    assert binomial_cdf(0, 10, 0.5) == pytest.approx(0.5**10)
    with pytest.raises(ValueError):
        binomial_cdf(3, 10, 1.5)


def test_binomial_cdf_is_stable_for_large_n():
    n, p = 100_000, 0.913

    sd = math.sqrt(n * p * (1 - p))
    first = int(n * p - 40 * sd)  # the terms below are under exp(-800): 0.0 in a double

    def by_loop(k: int) -> float:  # independently: every term from lgamma, summed with fsum
        log_p, log_q = math.log(p), math.log(1 - p)
        return math.fsum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p
                                  + (n - i) * log_q) for i in range(first, k + 1))

    for k in (int(n * p - 6 * sd), int(n * p - 2 * sd), int(n * p), int(n * p + 3 * sd)):
        assert binomial_cdf(k, n, p) == pytest.approx(by_loop(k), rel=1e-8)
    assert binomial_cdf(first, n, p) < 1e-300
    assert binomial_cdf(n - 1, n, p) == pytest.approx(1.0)
    assert binomial_cdf(int(n * p), n, p) == pytest.approx(0.5, abs=0.01)


def test_normal_quantile_against_known_values_and_erfc():
    assert normal_quantile(0.975) == pytest.approx(1.959963984540054, rel=1e-13)
    assert normal_quantile(0.5) == pytest.approx(0.0, abs=1e-15)
    assert normal_quantile(0.001) == pytest.approx(-3.090232306167813, rel=1e-13)
    for p in (1e-12, 1e-6, 0.01, 0.02425, 0.1, 0.3, 0.7, 0.97575, 0.999, 1 - 1e-9):
        x = normal_quantile(p)
        assert 0.5 * math.erfc(-x / math.sqrt(2)) == pytest.approx(p, rel=1e-10)
        assert normal_quantile(1 - p) == pytest.approx(-x, rel=1e-6)
    for p in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError):
            normal_quantile(p)


def test_wilson_interval_by_hand():
    # 8 of 10 at 95%: centre (0.8 + z^2/20) / (1 + z^2/10), half-width z/(1 + z^2/10) sqrt(0.016 + z^2/400)
    z = 1.959963984540054
    centre = (0.8 + z * z / 20) / (1 + z * z / 10)
    half = z / (1 + z * z / 10) * math.sqrt(0.016 + z * z / 400)
    assert wilson_interval(8, 10) == pytest.approx((centre - half, centre + half), rel=1e-12)
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and 0 < high < 0.35
    assert wilson_interval(10, 10)[1] == 1.0
    wide, narrow = wilson_interval(50, 100, 0.99), wilson_interval(50, 100, 0.9)
    assert wide[0] < narrow[0] and wide[1] > narrow[1]
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_bootstrap_interval_is_deterministic_and_paired():
    rng = np.random.default_rng(0)
    values = rng.normal(size=200)
    first = bootstrap_interval(np.mean, values, seed=7)
    assert first == bootstrap_interval(np.mean, values, seed=7)
    assert first != bootstrap_interval(np.mean, values, seed=8)
    assert first[0] < values.mean() < first[1]
    assert first[1] - first[0] == pytest.approx(2 * 1.96 * values.std() / math.sqrt(200), rel=0.2)
    truth = rng.integers(0, 2, 100)

    def agreement(a, b):
        return float((a == b).mean())

    assert bootstrap_interval(agreement, truth, truth.copy(), draws=50) == (1.0, 1.0)  # rows stay pairs
    with pytest.raises(ValueError, match="one length"):
        bootstrap_interval(agreement, truth, truth[:-1])
    with pytest.raises(ValueError, match="at least one row"):
        bootstrap_interval(np.mean, [])


# ------------------------------------------------------------------------------------------------ calibration


def test_pav_by_hand():
    assert isotonic([1, 3, 2, 4]).tolist() == [1, 2.5, 2.5, 4]
    assert isotonic([5, 4, 3, 2, 1]).tolist() == [3, 3, 3, 3, 3]
    assert isotonic([3, 1], weights=[1, 3]).tolist() == [1.5, 1.5]
    assert isotonic([1, 2, 3]).tolist() == [1, 2, 3]
    assert isotonic([0, 1, 0, 1, 0]).tolist() == pytest.approx([0, 0.5, 0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="positive weight"):
        isotonic([1, 2], weights=[1, 0])


def test_row_isotonic_equals_pav():
    rng = np.random.default_rng(3)
    means, weights = rng.random((40, 12)), rng.integers(1, 9, (40, 12)).astype(float)
    means[0], means[1] = np.linspace(1, 0, 12), np.linspace(0, 1, 12)  # all pooled; nothing pooled
    weights[2:20, 8:] = 0  # empty groups last (a chunk with fewer distinct confidences): they join the last block
    fitted = stats._isotonic_rows(means, weights)
    for row in range(40):
        used = weights[row] > 0
        assert fitted[row][used] == pytest.approx(isotonic(means[row][used], weights[row][used]), abs=1e-12)
    assert fitted[0] == pytest.approx(np.full(12, np.average(means[0], weights=weights[0])))
    assert fitted[1] == pytest.approx(means[1], abs=1e-12)


def test_calibration_by_hand():
    calibration = Calibration.fit([0.6, 0.7, 0.8, 0.9], [1, 0, 1, 1], steps=4)
    assert calibration == Calibration(thresholds=(0.6, 0.8), values=(0.5, 1.0))
    assert calibration.apply([0.1, 0.6, 0.79, 0.8, 2.0]).tolist() == [0.5, 0.5, 0.5, 1.0, 1.0]
    assert estimated_accuracy(calibration, [0.65, 0.95]) == 0.75


def _labelled(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    confidence = np.round(0.5 + 0.5 * rng.beta(5, 1, rows), 6)
    return confidence, (rng.random(rows) < confidence**2).astype(int)


def test_calibration_is_monotone_small_and_keeps_the_mean():
    confidence, correct = _labelled(3000, 1)
    calibration = Calibration.fit(confidence, correct)
    assert len(calibration.values) <= stats.CALIBRATION_STEPS
    assert all(np.diff(calibration.values) > 0) and all(np.diff(calibration.thresholds) > 0)
    # in sample, isotonic regression keeps the weighted mean: the estimated accuracy is the accuracy
    assert estimated_accuracy(calibration, confidence) == pytest.approx(correct.mean(), abs=1e-12)
    grid = calibration.apply(np.linspace(0, 1, 101))
    assert (np.diff(grid) >= 0).all() and grid.min() >= 0 and grid.max() <= 1


def test_calibration_round_trips_through_json():
    calibration = Calibration.fit(*_labelled(1000, 2))
    data = json.loads(json.dumps({"method": "isotonic", "rows": 1000, **calibration.to_dict()}))
    back = Calibration.from_dict(data)
    assert back == Calibration.from_dict(back.to_dict())
    grid = np.linspace(0.5, 1, 500)
    assert back.apply(grid) == pytest.approx(calibration.apply(grid), abs=1e-6)


@pytest.mark.parametrize(("data", "message"), [
    ([0.5], "must be a JSON object, got list"),
    ({"values": [0.5]}, r"calibration.thresholds must be a list of numbers, got NoneType"),
    ({"thresholds": [0.5], "values": "0.5"}, r"calibration.values must be a list of numbers, got str"),
    ({"thresholds": [], "values": []}, "at least one step"),
    ({"thresholds": [0.5, 0.6], "values": [0.5]}, "one value per threshold, got 2 thresholds and 1 values"),
    ({"thresholds": [0.6, 0.5], "values": [0.5, 0.6]}, r"calibration.thresholds must be non-decreasing"),
    ({"thresholds": [0.5, 0.6], "values": [0.6, 0.5]}, r"calibration.values must be non-decreasing"),
    ({"thresholds": [0.5], "values": [1.5]}, r"calibration.values must lie in \[0, 1\]"),
    ({"thresholds": [0.5, True], "values": [0.5, 0.6]}, r"calibration.thresholds\[1\] must be a finite number"),
    ({"thresholds": [0.5], "values": [math.nan]}, r"calibration.values\[0\] must be a finite number, got nan"),
])
def test_calibration_from_dict_says_what_is_wrong(data, message):
    with pytest.raises(ValueError, match=message):
        Calibration.from_dict(data)


def test_calibration_fit_refuses_nonsense():
    with pytest.raises(ValueError, match="one correct"):
        Calibration.fit([0.5, 0.6], [1])
    with pytest.raises(ValueError, match="0 or 1"):
        Calibration.fit([0.5, 0.6], [1, 2])


# -------------------------------------------------------------------------------------------- null thresholds


def test_batched_null_thresholds_equal_the_per_draw_definition():
    confidence, correct = _labelled(400, 4)
    rng = np.random.default_rng(4)
    lengths, predicted = rng.integers(3, 60, 400), rng.choice(3, 400, p=[0.6, 0.3, 0.1])
    for values, statistic in ((confidence, psi_statistic()), (lengths, psi_statistic(bins=7)),
                              (predicted, label_mix_statistic(3))):
        batched = null_threshold(values, 250, statistic, 0.05, draws=150, seed=2)
        by_draw = null_threshold(values, 250, lambda a, w, s=statistic: s(a, w), 0.05, draws=150, seed=2)
        assert batched == pytest.approx(by_draw, rel=1e-12)
        assert batched > 0

    def drop(a, w):  # minus (estimated accuracy of the window - chunk A's accuracy), calibration fitted on A
        return -(estimated_accuracy(Calibration.fit(a[:, 0], a[:, 1]), w[:, 0]) - a[:, 1].mean())

    rows = np.stack([confidence, correct], axis=1)
    by_draw = -null_threshold(rows, 250, drop, 0.05, draws=150, seed=2)
    assert estimated_accuracy_null(confidence, correct, 250, 0.05, draws=150, seed=2) == pytest.approx(by_draw,
                                                                                                     abs=1e-12)


def test_null_thresholds_are_deterministic_and_shrink_with_the_window():
    confidence, _ = _labelled(600, 5)
    statistic = psi_statistic()
    first = null_threshold(confidence, 200, statistic, 0.01, draws=300, seed=1)
    assert first == null_threshold(confidence, 200, statistic, 0.01, draws=300, seed=1)
    assert first != null_threshold(confidence, 200, statistic, 0.01, draws=300, seed=2)
    assert null_threshold(confidence, 2000, statistic, 0.01, draws=300, seed=1) < first
    with pytest.raises(ValueError, match="alpha"):
        null_threshold(confidence, 200, statistic, 0.0)


# -------------------------------------------------------------------------------------------- the drift tests


def _reference(rows: int = 400, seed: int = 6, correct: bool = True) -> ReferenceSample:
    confidence, hits = _labelled(rows, seed)
    rng = np.random.default_rng(seed)
    return ReferenceSample(confidence=confidence, predicted=rng.integers(0, 2, rows),
                           token_length=rng.integers(5, 80, rows), correct=hits if correct else None,
                           labels=("negative", "positive"))


def test_reference_sample_checks_and_freezes_its_rows():
    columns = {"confidence": [0.9] * 3, "predicted": [0, 1, 1], "token_length": [5, 6, 7], "correct": [1, 0, 1]}
    sample = ReferenceSample.from_columns(columns, ["a", "b"])
    assert sample.rows == 3 and sample.accuracy == pytest.approx(2 / 3)
    assert not sample.confidence.flags.writeable
    assert sample.key == ReferenceSample.from_columns(columns, ["a", "b"]).key
    assert sample.key != ReferenceSample.from_columns({**columns, "correct": [1, 1, 1]}, ["a", "b"]).key
    embedder = ReferenceSample.from_columns({"token_length": [5, 6]}, [])
    assert embedder.calibration is None and embedder.accuracy is None
    for change, message in (({"predicted": [0, 1]}, "predicted has 2 rows"), ({"predicted": [0, 1, 2]}, r"\[0, 2\)"),
                            ({"correct": [1, 2, 1]}, "0 or 1"), ({"confidence": [0.9, math.inf, 0.9]}, "finite")):
        with pytest.raises(ValueError, match=message):
            ReferenceSample.from_columns({**columns, **change}, ["a", "b"])
    with pytest.raises(ValueError, match="differ in length"):
        WindowRows(confidence=[0.9], predicted=[0], token_length=[5, 6])


def test_drift_tests_run_what_the_reference_supports():
    reference = _reference()
    rng = np.random.default_rng(7)
    picks = rng.integers(0, reference.rows, 250)
    window = WindowRows(confidence=reference.confidence[picks], predicted=reference.predicted[picks],
                        token_length=reference.token_length[picks])
    tests = drift_tests(reference, window, draws=200)
    assert [test.name for test in tests] == list(stats.DRIFT_TESTS)
    assert all(test.window == 250 and test.alpha == stats.DRIFT_ALPHA for test in tests)
    assert not any(test.fired for test in tests)
    assert json.loads(json.dumps([test.to_dict() for test in tests]))
    unlabelled = _reference(correct=False)
    assert [test.name for test in drift_tests(unlabelled, window, draws=200)] == list(stats.DRIFT_TESTS[:3])
    embedder = ReferenceSample.from_columns({"token_length": reference.token_length}, [])
    only_lengths = WindowRows(confidence=[], predicted=[], token_length=window.token_length)
    assert [test.name for test in drift_tests(embedder, only_lengths, draws=200)] == ["token_length_psi"]
    with pytest.raises(ValueError, match=f"at least {stats.MIN_DRIFT_ROWS} rows"):
        drift_tests(reference, WindowRows(confidence=[0.9], predicted=[0], token_length=[5]))


def test_drift_tests_fire_on_a_shift_and_remember_thresholds():
    reference = _reference(seed=8)
    shifted = WindowRows(confidence=np.full(300, 0.55), predicted=np.ones(300, dtype=int),
                         token_length=np.full(300, 200))
    before = len(stats._THRESHOLDS)
    tests = {test.name: test for test in drift_tests(reference, shifted, draws=200)}
    assert all(test.fired for test in tests.values())
    assert tests["estimated_accuracy"].statistic < tests["estimated_accuracy"].threshold < 0
    assert len(stats._THRESHOLDS) == before + 4
    assert null_thresholds(reference, 300, draws=200) == {name: test.threshold for name, test in tests.items()}
    assert len(stats._THRESHOLDS) == before + 4  # memoised: not drawn again
    given = {name: 1e9 for name in tests} | {"estimated_accuracy": -1e9}
    assert not any(test.fired for test in drift_tests(reference, shifted, thresholds=given))


# ------------------------------------------------------------------------------------------ the accuracy test


def test_accuracy_drop_test_by_hand():
    margin = math.sqrt(0.913 * 0.087 / 2200)
    test = accuracy_drop_test(120, 150, 0.913, 2200, alpha=0.002)
    assert test.margin == pytest.approx(margin)
    assert test.tested_against == pytest.approx(0.913 - margin)
    assert test.p_value == pytest.approx(_cdf_by_fractions(120, 150, 0.913 - margin), rel=1e-9)
    assert test.fired and test.accuracy == 0.8
    healthy = accuracy_drop_test(136, 150, 0.913, 2200)
    assert not healthy.fired and healthy.p_value > 0.3
    assert json.loads(json.dumps(test.to_dict()))["fired"] is True
    for arguments in ((151, 150, 0.9, 100), (0, 0, 0.9, 100), (1, 2, 1.2, 100), (1, 2, 0.9, 0)):
        with pytest.raises(ValueError):
            accuracy_drop_test(*arguments)
