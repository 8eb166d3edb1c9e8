"""The statistics of the model monitor: is a served classifier still the model it was at build time?

Pure numpy and :mod:`math` (no scipy): this module ships in the runtime layer, which carries numpy only.

The monitor compares live traffic with the **reference sample** recorded at build time (the int8 model's outputs on
the validation split, row by row: top-label confidence, predicted label, token length and whether it was right).
Two kinds of evidence:

* **Labelled** (feedback): :func:`accuracy_drop_test`, an exact one-sided binomial test of a window of labels
  against the reference accuracy, less one standard error of that accuracy (the reference is itself an estimate:
  about 0.6 points on ~2,200 texts, and a live model that is exactly as good must not be flagged for the
  reference's luck).
* **Unlabelled** (every prediction): :func:`drift_tests` on a window of rows, namely the PSI of the confidence and
  of the token length, the Jensen-Shannon divergence of the predicted-label mix, and the accuracy that the
  confidences predict through the reference's isotonic calibration (confidence-based performance estimation,
  CBPE). Their thresholds are not guessed constants (a PSI of 0.1 means different things at 200 and at 20,000
  rows): :func:`null_threshold` draws them from the spread between two halves of the reference itself, at the
  window size tested, so that each test fires on a healthy window with probability about ``alpha`` or less,
  whatever the window.

**Windows never overlap.** The monitor consumes the next ``n`` labels (or rows) and tests that window exactly once.
Each test then raises a false alarm on a healthy model with probability at most ``alpha`` per window, and the
windows are independent, so::

    false alarms per month <= alpha x windows per month           (windows per month = items per month / window)

For example: ``ACCURACY_ALPHA`` 0.002, 150-label windows, 1,000 labels a day -> 200 windows a month -> at most
0.4 false alarms per model per month. Drift: 4 tests at ``DRIFT_ALPHA`` 0.0005, 300-row windows, 3,000 predictions
a day -> 300 windows a month -> at most 4 x 0.0005 x 300 = 0.6 a month. Measured on the real scenario's in-domain
split (20,000 windows): the confidence, token-length and estimated-accuracy tests never fired (the null drawn from
two halves of the reference is wider than the live comparison against the whole of it); the label mix fired in
0.065% of windows, a little over its alpha, because that reference's label share differs from the test split's by
chance (as its accuracy does: below). Re-testing a sliding window after every new item instead tests nearly the
same data again and again: an exact test at p < 0.01 then fires falsely 6.7% of the time within 1,000 labels
(DRIFT.md), and more the longer it runs. A larger window buys power, not false alarms: fewer windows at the same
``alpha``.

The accuracy test's bound holds while the live accuracy is at least the reference accuracy less one standard
error. A reference luckier than that raises it a little: the bundled scenario's reference scores 0.922 and the same
model's test split 0.912 (1.7 standard errors), and at 150 labels the test then fires in 0.3% of healthy windows
instead of at most 0.2%.

Why these defaults: at ``ACCURACY_WINDOW`` 150 labels and ``ACCURACY_ALPHA`` 0.002 the exact test detects a drop
from 0.92 to 0.78 (the Coachella shift of DRIFT.md) in 97% of windows, and to 0.73 (the bundled scenario) in
99.9%; ``DRIFT_WINDOW`` 300 rows detect that shift's confidence PSI in every window. Below ``MIN_DRIFT_ROWS`` (200)
a window's bins are too sparse for the distribution tests. ``NULL_DRAWS`` 4,000 puts the 0.9995 quantile near the
third-largest draw: noisy, but conservative here, and computed once per reference and window size (about 0.1 to
0.4 s a test on one core, memoised for the warm container).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ACCURACY_ALPHA = 0.002  # per 150-label window: 0.4 false alarms a month at 200 windows a month
DRIFT_ALPHA = 0.0005  # per test and 300-row window: under one false alarm a month up to ~7,500 predictions a day
ACCURACY_WINDOW = 150  # labels a window of the accuracy test
DRIFT_WINDOW = 300  # rows a window of the drift tests
MIN_DRIFT_ROWS = 200  # fewer rows: the bins are too sparse (DRIFT.md: at 100 rows, 39% of in-domain PSIs pass 0.1)
MIN_REFERENCE_ROWS = 200  # a reference sample smaller than this cannot give a null distribution worth the name
NULL_DRAWS = 4000  # draws of the null distribution of each drift test
PSI_BINS = 10
SMOOTHING = 0.5  # added to every bin's count, so that an empty bin costs a finite amount
CALIBRATION_STEPS = 50  # the calibration's step function has at most this many steps

DRIFT_TESTS = ("confidence_psi", "token_length_psi", "label_mix_js", "estimated_accuracy")

# --------------------------------------------------------------------------------------------------- binning


def quantile_edges(values: Any, bins: int = PSI_BINS) -> tuple[float, ...]:
    """The edges of ``bins`` equal-count bins of ``values``: bins + 1 of them, the first the minimum and the last
    the maximum, each an observed value (the lower order statistic at each quantile, no interpolation), with
    duplicates collapsed so that every bin has positive width (a column of ties makes fewer, fuller bins).

    Observed values rather than interpolated ones: a value equal to an edge then falls on a known side of it, and
    the null draws can bin by rank (:func:`null_threshold`) exactly as a live window is binned by value.
    """
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError("quantile_edges needs at least one value")
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    if not np.isfinite(array).all():
        raise ValueError("quantile_edges needs finite values")
    ordered = np.sort(array)
    edges = np.unique(ordered[_quantile_positions(ordered.size, bins)])
    if edges.size == 1:
        return (float(edges[0]), float(edges[0]))  # a constant: one bin
    return tuple(float(edge) for edge in edges)


def _quantile_positions(size: int, bins: int) -> np.ndarray:
    """The sorted positions of the edges of ``bins`` equal-count bins among ``size`` values (integer arithmetic:
    the row-wise null draws use the same positions)."""
    return (np.arange(bins + 1, dtype=np.int64) * (size - 1)) // bins


def open_bin_counts(values: Any, edges: Sequence[float]) -> np.ndarray:
    """Counts of ``values`` in the bins between consecutive ``edges``, the outer bins open: everything below
    ``edges[1]`` counts in the first bin and everything at or above ``edges[-2]`` in the last.

    Open, because drift lives in the tails: ``np.histogram`` drops what falls outside [edges[0], edges[-1]], so a
    live window whose texts are all longer than the reference's longest would look like an empty window, not a
    shifted one. A value equal to an interior edge falls in the bin above it.
    """
    edge_array = np.asarray(edges, dtype=np.float64)
    if edge_array.ndim != 1 or edge_array.size < 2:
        raise ValueError(f"open_bin_counts needs at least 2 edges, got {edge_array.size}")
    if (np.diff(edge_array) < 0).any():
        raise ValueError("open_bin_counts needs non-decreasing edges")
    index = np.searchsorted(edge_array[1:-1], np.asarray(values, dtype=np.float64).ravel(), side="right")
    return np.bincount(index, minlength=edge_array.size - 1).astype(np.int64)


# ------------------------------------------------------------------------------------------------ divergences


def _counts_pair(first: Any, second: Any, smoothing: float, what: str) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(first, dtype=np.float64)
    b = np.asarray(second, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise ValueError(f"{what} needs two 1-d count vectors of the same non-zero length, got {a.shape} and {b.shape}")
    if (a < 0).any() or (b < 0).any() or not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(f"{what} needs finite non-negative counts")
    if not smoothing >= 0:
        raise ValueError(f"smoothing must be >= 0, got {smoothing}")
    return a, b


def _shares(counts: np.ndarray, valid: np.ndarray, smoothing: float) -> np.ndarray:
    """Each row's counts plus ``smoothing`` in its valid bins, as shares (invalid bins: 0)."""
    smoothed = (counts + smoothing) * valid
    totals = smoothed.sum(axis=-1, keepdims=True)
    shares: np.ndarray = np.divide(smoothed, totals, out=np.zeros_like(smoothed), where=totals > 0)
    return shares


def _psi_rows(expected: np.ndarray, actual: np.ndarray, valid: np.ndarray, smoothing: float) -> np.ndarray:
    """PSI of each row (the null draws' batch form; :func:`psi` is the one-row case, so both compute alike)."""
    p = _shares(expected, valid, smoothing)
    q = _shares(actual, valid, smoothing)
    both = (p > 0) & (q > 0)
    ratio = np.log(np.divide(q, p, out=np.ones_like(q), where=both))
    terms = np.where(both, (q - p) * ratio, 0.0)
    one_sided = ((p > 0) != (q > 0)).any(axis=-1)  # only without smoothing: a bin empty on one side only
    return np.where(one_sided, np.inf, terms.sum(axis=-1))


def _js_rows(p_counts: np.ndarray, q_counts: np.ndarray, smoothing: float) -> np.ndarray:
    valid = np.ones(p_counts.shape, dtype=bool)
    p = _shares(p_counts, valid, smoothing)
    q = _shares(q_counts, valid, smoothing)
    m = (p + q) / 2

    def kl(x: np.ndarray) -> np.ndarray:
        positive = x > 0
        logs = np.log2(np.divide(x, m, out=np.ones_like(x), where=positive))
        divergence: np.ndarray = np.where(positive, x * logs, 0.0).sum(axis=-1)
        return divergence

    bounded: np.ndarray = np.clip((kl(p) + kl(q)) / 2, 0.0, 1.0)
    return bounded


def psi(expected_counts: Any, actual_counts: Any, smoothing: float = SMOOTHING) -> float:
    """Population stability index: sum over bins of (q - p) ln(q / p), with p the expected (reference) shares and
    q the actual (live) ones, each bin's count plus ``smoothing`` before normalising.

    Smoothed, because a 300-row window leaves some of ten bins empty by chance and ln(q / 0) is infinite; with
    ``smoothing`` 0, a bin empty on one side only gives ``inf``.
    """
    expected, actual = _counts_pair(expected_counts, actual_counts, smoothing, "psi")
    return float(_psi_rows(expected, actual, np.ones(expected.shape, dtype=bool), smoothing))


def js_divergence(p_counts: Any, q_counts: Any, smoothing: float = SMOOTHING) -> float:
    """Jensen-Shannon divergence of two count vectors (plus ``smoothing`` each), base 2: 0 for the same shares, 1
    for disjoint ones. Symmetric and bounded, so a label that one side never predicted costs a finite amount."""
    p, q = _counts_pair(p_counts, q_counts, smoothing, "js_divergence")
    return float(_js_rows(p, q, smoothing))


# ------------------------------------------------------------------------------------------ exact and interval


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), exactly (a sum of probabilities, not a normal approximation).

    Summed in log space from the term at ``k`` (its log from :func:`math.lgamma`) outward along the smaller
    tail, whose terms shrink geometrically, so that nothing overflows or underflows for n up to 100,000 and more.
    """
    if n < 0 or not 0.0 <= p <= 1.0:
        raise ValueError(f"binomial_cdf needs n >= 0 and 0 <= p <= 1, got n={n}, p={p}")
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p == 0.0:
        return 1.0
    if p == 1.0:
        return 0.0
    log_odds = math.log(p) - math.log1p(-p)
    if k <= n * p:  # the lower tail directly: terms k, k-1, ..., 0, each smaller than the one before
        i = np.arange(k, 0, -1, dtype=np.float64)
        steps = np.log(i) - np.log(n - i + 1) - log_odds  # log pmf(i-1) - log pmf(i)
        return min(1.0, math.exp(_log_pmf(k, n, p)) * _sum_exp_cumulative(steps))
    i = np.arange(k + 1, n, dtype=np.float64)  # the upper tail: terms k+1, ..., n, shrinking likewise
    steps = np.log(n - i) - np.log(i + 1) + log_odds  # log pmf(i+1) - log pmf(i)
    return max(0.0, 1.0 - math.exp(_log_pmf(k + 1, n, p)) * _sum_exp_cumulative(steps))


def _log_pmf(k: int, n: int, p: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)


def _sum_exp_cumulative(steps: np.ndarray) -> float:
    """1 + sum of exp(cumulative sums of ``steps``): a tail relative to its first term."""
    return float(1.0 + np.exp(np.cumsum(steps)).sum()) if steps.size else 1.0


# Acklam's rational approximation of the normal quantile (relative error 1.15e-9), then one Halley step on
# math.erfc, which brings it to double precision.
_A = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
      -3.066479806614716e01, 2.506628277459239e00)
_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
      -1.328068155288572e01)
_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
      4.374664141464968e00, 2.938163982698783e00)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
_P_LOW = 0.02425


def _polynomial(coefficients: Sequence[float], x: float) -> float:
    result = 0.0
    for coefficient in coefficients:
        result = result * x + coefficient
    return result


def normal_quantile(p: float) -> float:
    """The standard normal quantile: x with P(Z <= x) = p, for 0 < p < 1 (normal_quantile(0.975) = 1.95996...)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"normal_quantile needs 0 < p < 1, got {p}")
    if p < _P_LOW or p > 1 - _P_LOW:
        q = math.sqrt(-2 * math.log(min(p, 1 - p)))
        x = _polynomial(_C, q) / (_polynomial(_D, q) * q + 1)
        x = x if p < _P_LOW else -x
    else:
        q = p - 0.5
        r = q * q
        x = _polynomial(_A, r) * q / (_polynomial(_B, r) * r + 1)
    error = 0.5 * math.erfc(-x / math.sqrt(2)) - p
    u = error * math.sqrt(2 * math.pi) * math.exp(x * x / 2)
    return x - u / (1 + x * u / 2)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion: unlike p +- z*SE it stays inside [0, 1] and keeps its coverage
    near 0 and 1 (an accuracy of 0.97 on 150 labels). No observations: (0.0, 1.0), all that is known."""
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"wilson_interval needs 0 <= successes <= n, got {successes} of {n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return (0.0, 1.0)
    z = normal_quantile(1 - (1 - confidence) / 2)
    share = successes / n
    denominator = 1 + z * z / n
    centre = (share + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exactly: centre = half there, less rounding
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (low, high)


def bootstrap_interval(statistic: Callable[..., float], *arrays: Any, confidence: float = 0.95, draws: int = 1000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*arrays)``: rows resampled with replacement, the arrays
    together (paired: truth and prediction of a row stay a pair), deterministic for a ``seed``.

    For figures with no closed-form interval, such as macro-F1 on a window of labels.
    """
    if not arrays:
        raise ValueError("bootstrap_interval needs at least one array")
    columns = [np.asarray(array) for array in arrays]
    rows = len(columns[0])
    if any(len(column) != rows for column in columns):
        raise ValueError(f"bootstrap_interval needs arrays of one length, got {[len(column) for column in columns]}")
    if rows == 0:
        raise ValueError("bootstrap_interval needs at least one row")
    if draws < 1 or not 0.0 < confidence < 1.0:
        raise ValueError(f"bootstrap_interval needs draws >= 1 and 0 < confidence < 1, got {draws}, {confidence}")
    indexes = np.random.default_rng(seed).integers(0, rows, size=(draws, rows))
    values = np.array([statistic(*(column[index] for column in columns)) for index in indexes], dtype=np.float64)
    low, high = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2])
    return (float(low), float(high))


# ------------------------------------------------------------------------------------------------ calibration


def isotonic(values: Any, weights: Any | None = None) -> np.ndarray:
    """The non-decreasing sequence closest to ``values`` in weighted least squares (pool adjacent violators):
    each run of values that goes down is replaced by its weighted mean, until nothing goes down."""
    y = np.asarray(values, dtype=np.float64).ravel()
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != y.shape or (w <= 0).any():
        raise ValueError("isotonic needs one positive weight per value")
    means: list[float] = []
    totals: list[float] = []
    sizes: list[int] = []
    for value, weight in zip(y.tolist(), w.tolist(), strict=True):
        means.append(value)
        totals.append(weight)
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:  # a violator: pool the last two blocks
            weight_sum = totals[-2] + totals[-1]
            means[-2] = (means[-2] * totals[-2] + means[-1] * totals[-1]) / weight_sum
            totals[-2] = weight_sum
            sizes[-2] += sizes[-1]
            del means[-1], totals[-1], sizes[-1]
    return np.repeat(np.asarray(means, dtype=np.float64), sizes)


def _isotonic_rows(means: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """:func:`isotonic` of each row of a 2-d array at once: every adjacent pair of blocks that goes down is
    pooled, in all rows together, until none does. Pooling any adjacent violators (in any order, several at
    once) ends where pool-adjacent-violators ends; nearly monotone rows (calibration groups) take a few rounds.
    Zero-weight entries must come last: they join the last block."""
    rows, size = means.shape
    zero = np.zeros((rows, 1))
    cumulative_weight = np.concatenate([zero, np.cumsum(weights, axis=1)], axis=1)
    cumulative_sum = np.concatenate([zero, np.cumsum(means * weights, axis=1)], axis=1)
    starts = weights > 0  # True where a block starts: at first every weighted entry is a block
    starts[:, 0] = True
    positions = np.broadcast_to(np.arange(size), (rows, size))
    while True:
        start = np.maximum.accumulate(np.where(starts, positions, 0), axis=1)
        following = np.where(starts, positions, size)[:, ::-1]
        end = np.concatenate([np.minimum.accumulate(following, axis=1)[:, ::-1][:, 1:], np.full((rows, 1), size)],
                             axis=1)  # one past the block's last entry
        block_weight = np.take_along_axis(cumulative_weight, end, 1) - np.take_along_axis(cumulative_weight, start, 1)
        block_sum = np.take_along_axis(cumulative_sum, end, 1) - np.take_along_axis(cumulative_sum, start, 1)
        fitted: np.ndarray = np.divide(block_sum, block_weight, out=np.zeros_like(block_sum),
                                       where=block_weight > 0)
        down = starts[:, 1:] & (fitted[:, :-1] > fitted[:, 1:])
        if not down.any():
            return fitted
        starts[:, 1:] &= ~down


@dataclass(frozen=True)
class Calibration:
    """Confidence -> P(correct), a non-decreasing step function: ``values[i]`` for confidences from
    ``thresholds[i]`` (inclusive) up to ``thresholds[i + 1]``; the first step also covers everything below
    ``thresholds[0]`` and the last everything above.

    Fitted by isotonic regression of correct (0/1) on confidence over at most ``CALIBRATION_STEPS`` equal-count
    groups of the reference: a model's confidence is rarely its accuracy (a fine-tuned MiniLM says 0.99 and is
    right 0.95 of the time), and isotonic regression assumes nothing but that higher confidence is not less often
    right. The groups keep it small enough for the manifest and smooth enough for a few thousand rows.
    """

    thresholds: tuple[float, ...]
    values: tuple[float, ...]

    @classmethod
    def fit(cls, confidence: Any, correct: Any, steps: int = CALIBRATION_STEPS) -> Calibration:
        scores = np.asarray(confidence, dtype=np.float64).ravel()
        hits = np.asarray(correct, dtype=np.float64).ravel()
        if scores.size == 0 or scores.shape != hits.shape:
            raise ValueError(f"Calibration.fit needs one correct (0/1) per confidence, got {scores.size} and "
                             f"{hits.size}")
        if not ((hits == 0) | (hits == 1)).all():
            raise ValueError("Calibration.fit needs correct values of 0 or 1")
        edges = np.asarray(quantile_edges(scores, steps))
        group = np.searchsorted(edges[1:-1], scores, side="right")
        weights = np.bincount(group, minlength=edges.size - 1).astype(np.float64)  # every group holds its edge
        fitted = isotonic(np.bincount(group, weights=hits, minlength=edges.size - 1) / weights, weights)
        first = np.concatenate([[True], fitted[1:] != fitted[:-1]])  # merge groups that the fit made equal
        return cls(thresholds=tuple(float(edge) for edge in edges[:-1][first]),
                   values=tuple(float(value) for value in np.clip(fitted[first], 0.0, 1.0)))

    def apply(self, confidence: Any) -> np.ndarray:
        """P(correct) of each confidence (a float array of the input's shape)."""
        scores = np.asarray(confidence, dtype=np.float64)
        step = np.searchsorted(np.asarray(self.thresholds[1:], dtype=np.float64), scores, side="right")
        return np.clip(np.asarray(self.values, dtype=np.float64)[step], 0.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, rounded to 6 decimals (as the manifest's confidences are)."""
        return {"thresholds": [round(value, 6) for value in self.thresholds],
                "values": [round(value, 6) for value in self.values]}

    @classmethod
    def from_dict(cls, data: Any) -> Calibration:
        """Read back ``to_dict()`` (other keys, such as the manifest's ``method``, are ignored); a wrong shape
        raises ValueError saying what is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError(f"calibration must be a JSON object, got {type(data).__name__}")
        columns = {name: _numbers(data, name) for name in ("thresholds", "values")}
        thresholds, values = columns["thresholds"], columns["values"]
        if not thresholds:
            raise ValueError("calibration.thresholds must hold at least one step")
        if len(thresholds) != len(values):
            raise ValueError(f"calibration needs one value per threshold, got {len(thresholds)} thresholds and "
                             f"{len(values)} values")
        for name, column in columns.items():
            if any(later < earlier for earlier, later in itertools.pairwise(column)):
                raise ValueError(f"calibration.{name} must be non-decreasing")
        if any(not 0.0 <= value <= 1.0 for value in values):
            raise ValueError("calibration.values must lie in [0, 1]")
        return cls(thresholds=thresholds, values=values)


def _numbers(data: Mapping[str, Any], name: str) -> tuple[float, ...]:
    column = data.get(name)
    if not isinstance(column, list):
        raise ValueError(f"calibration.{name} must be a list of numbers, got {type(column).__name__}")
    for index, value in enumerate(column):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"calibration.{name}[{index}] must be a finite number, got {value!r}")
    return tuple(float(value) for value in column)


def estimated_accuracy(calibration: Calibration, confidences: Any) -> float:
    """The accuracy that a window's confidences predict (CBPE): the mean of their calibrated P(correct). Needs no
    labels, so it watches every prediction; it assumes the calibration still holds, which a shift of topic can
    break, so the labelled test stays the evidence."""
    scores = np.asarray(confidences, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("estimated_accuracy needs at least one confidence")
    return float(calibration.apply(scores).mean())


# -------------------------------------------------------------------------------------------- null thresholds


Statistic = Callable[[np.ndarray, np.ndarray], float]
"""A drift statistic: chunk A of the reference (its bins, its shares) against a window; larger is worse."""


@functools.lru_cache(maxsize=4)
def _draw_indexes(rows: int, window: int, draws: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per draw: the rows of half A of a shuffled reference, and ``window`` rows drawn with replacement from the
    other half B. Cached (read-only): the tests of one reference share them."""
    rng = np.random.default_rng(seed)
    half = rows // 2
    order = np.argpartition(rng.random((draws, rows), dtype=np.float32), half, axis=1).astype(np.int32)
    chunk, rest = order[:, :half], order[:, half:]
    picks = rng.integers(0, rows - half, size=(draws, window))
    window_rows = np.take_along_axis(rest, picks, axis=1)
    chunk.setflags(write=False)
    window_rows.setflags(write=False)
    return chunk, window_rows


def _check_null(rows: int, window: int, alpha: float, draws: int) -> None:
    if rows < 4:
        raise ValueError(f"a null distribution needs a reference of at least 4 rows, got {rows}")
    if window < 1 or draws < 1:
        raise ValueError(f"a null distribution needs window >= 1 and draws >= 1, got {window}, {draws}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def null_threshold(reference_values: Any, window: int, statistic: Statistic, alpha: float, draws: int = NULL_DRAWS,
                   seed: int = 0) -> float:
    """The value that ``statistic`` exceeds with probability ``alpha`` when nothing changed, at this window size.

    Each draw shuffles the reference, splits it into halves A and B, draws ``window`` rows from B with
    replacement (a window of traffic like the reference's) and computes ``statistic(A rows, window rows)``; the
    result is the (1 - alpha) quantile of the draws. The halves make it conservative: a live window is compared
    with the whole reference, half the sampling noise. ``reference_values`` is indexed by row (a 2-d array gives
    the statistic 2-d rows). The ready-made statistics (:func:`psi_statistic`, :func:`label_mix_statistic`)
    compute all draws at once; any other callable is called per draw.
    """
    values = np.asarray(reference_values)
    _check_null(len(values), window, alpha, draws)
    chunk, window_rows = _draw_indexes(len(values), window, draws, seed)
    if isinstance(statistic, _BatchStatistic):
        draws_values = statistic.many(values, chunk, window_rows)
    else:
        draws_values = np.array([statistic(values[a], values[w]) for a, w in zip(chunk, window_rows, strict=True)],
                                dtype=np.float64)
    return float(np.quantile(draws_values, 1 - alpha))


class _BatchStatistic(ABC):
    """A statistic that also computes all draws of :func:`null_threshold` at once, identically."""

    @abstractmethod
    def __call__(self, chunk: np.ndarray, window: np.ndarray) -> float:
        """The statistic of one window against one chunk of the reference."""

    @abstractmethod
    def many(self, values: np.ndarray, chunk: np.ndarray, window: np.ndarray) -> np.ndarray:
        """Every draw's statistic: rows of indexes into `values` for the chunks and for the windows."""


def _row_counts(index: np.ndarray, width: int) -> np.ndarray:
    """Counts of 0..width-1 in each row of ``index``."""
    rows = index.shape[0]
    offsets = (np.arange(rows, dtype=np.int64) * width)[:, None]
    return np.bincount((index + offsets).ravel(), minlength=rows * width).reshape(rows, width).astype(np.float64)


def _rank_bins(chunk_ranks: np.ndarray, unique: int, bins: int) -> np.ndarray:
    """For each draw, the bin of every rank 0..unique-1 under that draw's :func:`quantile_edges` of its chunk
    (``chunk_ranks``, a row per draw): shape (draws, unique). Ranks (dense, of the whole reference) compare
    exactly as the values do."""
    edges = np.sort(chunk_ranks, axis=1)[:, _quantile_positions(chunk_ranks.shape[1], bins)]
    draws = chunk_ranks.shape[0]
    starts = np.zeros((draws, unique), dtype=np.int8)  # 1 where a bin starts: at each distinct interior edge
    rows = np.arange(draws)[:, None]
    starts[rows, edges[:, 1:-1]] = 1
    starts[rows[:, 0], edges[:, 0]] = 0  # an interior edge equal to the minimum or maximum is no edge
    starts[rows[:, 0], edges[:, -1]] = 0
    return np.cumsum(starts, axis=1, dtype=np.int32)


@dataclass(frozen=True)
class PsiStatistic(_BatchStatistic):
    """PSI of a window against chunk A, in ``bins`` quantile bins of A (open outer bins)."""

    bins: int = PSI_BINS
    smoothing: float = SMOOTHING

    def __call__(self, chunk: np.ndarray, window: np.ndarray) -> float:
        edges = quantile_edges(chunk, self.bins)
        return psi(open_bin_counts(chunk, edges), open_bin_counts(window, edges), self.smoothing)

    def many(self, values: np.ndarray, chunk: np.ndarray, window: np.ndarray) -> np.ndarray:
        unique, ranks = np.unique(np.asarray(values, dtype=np.float64).ravel(), return_inverse=True)
        chunk_ranks = ranks[chunk]
        bin_of_rank = _rank_bins(chunk_ranks, unique.size, self.bins)
        chunk_bins = np.take_along_axis(bin_of_rank, chunk_ranks, axis=1)
        window_bins = np.take_along_axis(bin_of_rank, ranks[window], axis=1)
        valid = np.arange(self.bins)[None, :] <= bin_of_rank[:, -1:]
        return _psi_rows(_row_counts(chunk_bins, self.bins), _row_counts(window_bins, self.bins), valid,
                         self.smoothing)


@dataclass(frozen=True)
class LabelMixStatistic(_BatchStatistic):
    """Jensen-Shannon divergence of the predicted-label counts of a window against chunk A's."""

    n_labels: int
    smoothing: float = SMOOTHING

    def __call__(self, chunk: np.ndarray, window: np.ndarray) -> float:
        return js_divergence(_label_counts(chunk, self.n_labels), _label_counts(window, self.n_labels),
                             self.smoothing)

    def many(self, values: np.ndarray, chunk: np.ndarray, window: np.ndarray) -> np.ndarray:
        labels = np.asarray(values, dtype=np.int64).ravel()
        _label_counts(labels, self.n_labels)  # checks the range
        return _js_rows(_row_counts(labels[chunk], self.n_labels), _row_counts(labels[window], self.n_labels),
                        self.smoothing)


def _label_counts(predicted: Any, n_labels: int) -> np.ndarray:
    labels = np.asarray(predicted, dtype=np.int64).ravel()
    if labels.size and (labels.min() < 0 or labels.max() >= n_labels):
        raise ValueError(f"predicted label indexes must lie in [0, {n_labels}), got {labels.min()}..{labels.max()}")
    return np.bincount(labels, minlength=n_labels)


def psi_statistic(bins: int = PSI_BINS, smoothing: float = SMOOTHING) -> PsiStatistic:
    return PsiStatistic(bins=bins, smoothing=smoothing)


def label_mix_statistic(n_labels: int, smoothing: float = SMOOTHING) -> LabelMixStatistic:
    if n_labels < 1:
        raise ValueError(f"n_labels must be at least 1, got {n_labels}")
    return LabelMixStatistic(n_labels=n_labels, smoothing=smoothing)


_CHUNK_DRAWS = 500  # draws per block of the estimated-accuracy null: bounds its (draws, distinct confidences) table


def estimated_accuracy_null(reference_confidence: Any, reference_correct: Any, window: int, alpha: float,
                            draws: int = NULL_DRAWS, seed: int = 0, steps: int = CALIBRATION_STEPS) -> float:
    """The alpha quantile of (a window's estimated accuracy - chunk A's observed accuracy), with the calibration
    fitted on chunk A (:meth:`Calibration.fit`) and the window drawn from half B (:func:`null_threshold`): a live
    estimated accuracy that falls further below the reference accuracy than this is a significant drop.

    All draws at once: the calibration of each chunk is fitted by rank over its ``steps`` groups with the
    min-max form of isotonic regression, which gives what :meth:`Calibration.fit` gives.
    """
    scores = np.asarray(reference_confidence, dtype=np.float64).ravel()
    hits = np.asarray(reference_correct, dtype=np.float64).ravel()
    if scores.shape != hits.shape:
        raise ValueError(f"estimated_accuracy_null needs one correct per confidence, got {scores.size} and "
                         f"{hits.size}")
    _check_null(scores.size, window, alpha, draws)
    chunk, window_rows = _draw_indexes(scores.size, window, draws, seed)
    unique, ranks = np.unique(scores, return_inverse=True)
    right = hits.astype(bool)
    differences = []
    for start in range(0, draws, _CHUNK_DRAWS):
        block, block_window = chunk[start : start + _CHUNK_DRAWS], window_rows[start : start + _CHUNK_DRAWS]
        chunk_ranks = ranks[block]
        group_of_rank = _rank_bins(chunk_ranks, unique.size, steps)
        group = np.take_along_axis(group_of_rank, chunk_ranks, axis=1)
        weights = _row_counts(group, steps)
        flat = group + (np.arange(len(block)) * steps)[:, None]
        sums = np.bincount(flat[right[block]], minlength=len(block) * steps).reshape(len(block), steps)
        means = np.divide(sums, weights, out=np.zeros_like(weights), where=weights > 0)
        fitted = np.where(weights > 0, np.clip(_isotonic_rows(means, weights), 0.0, 1.0), 0.0)
        window_counts = _row_counts(np.take_along_axis(group_of_rank, ranks[block_window], axis=1), steps)
        estimated = (window_counts * fitted).sum(axis=1) / window
        differences.append(estimated - sums.sum(axis=1) / block.shape[1])
    return float(np.quantile(np.concatenate(differences), alpha))


# -------------------------------------------------------------------------------------------- the drift tests


def _column(values: Any, dtype: type, name: str) -> np.ndarray:
    array: np.ndarray = np.array(values, dtype=dtype).ravel()  # a copy, frozen below: the caller keeps theirs
    if dtype is np.float64 and not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite")
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class ReferenceSample:
    """The reference rows as arrays (``ferry.runtime.manifest.ReferenceSample`` holds them as JSON lists):
    per row the top-label ``confidence``, the ``predicted`` label index into ``labels``, the ``token_length`` and,
    when the split was labelled, ``correct`` (0/1). An embedder's sample has token lengths only (empty
    ``confidence`` and ``predicted``). The arrays are copied read-only, so :attr:`key` identifies the sample."""

    confidence: np.ndarray
    predicted: np.ndarray
    token_length: np.ndarray
    correct: np.ndarray | None
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        columns = {"confidence": _column(self.confidence, np.float64, "confidence"),
                   "predicted": _column(self.predicted, np.int64, "predicted"),
                   "token_length": _column(self.token_length, np.int64, "token_length")}
        if self.correct is not None:
            columns["correct"] = _column(self.correct, np.int64, "correct")
        for name, array in columns.items():
            object.__setattr__(self, name, array)
        object.__setattr__(self, "labels", tuple(self.labels))
        rows = len(columns["token_length"])
        for name, array in columns.items():
            if name in ("confidence", "predicted") and not array.size and self.correct is None:
                continue  # an embedder's sample
            if len(array) != rows:
                raise ValueError(f"reference {name} has {len(array)} rows, token_length {rows}")
        if self.correct is not None and not np.isin(columns["correct"], (0, 1)).all():
            raise ValueError("reference correct must be 0 or 1 per row")
        if columns["predicted"].size:
            _label_counts(columns["predicted"], len(self.labels))

    @classmethod
    def from_columns(cls, data: Mapping[str, Any], labels: Sequence[str]) -> ReferenceSample:
        """From a mapping of lists (``confidence``, ``predicted``, ``token_length``, optional ``correct``): the
        layout of the manifest's sample and of the drift fixtures."""
        def column(name: str) -> Any:
            value = data.get(name)
            return () if value is None else value

        return cls(confidence=column("confidence"), predicted=column("predicted"),
                   token_length=data["token_length"], correct=data.get("correct"), labels=tuple(labels))

    @property
    def rows(self) -> int:
        return len(self.token_length)

    @property
    def accuracy(self) -> float | None:
        return None if self.correct is None or not self.correct.size else float(self.correct.mean())

    @functools.cached_property
    def key(self) -> str:
        """A digest of the rows and labels: what cached null thresholds are keyed on."""
        digest = hashlib.blake2b(digest_size=16)
        for array in (self.confidence, self.predicted, self.token_length, self.correct):
            digest.update(b"-" if array is None else f"{array.dtype}:{array.size}:".encode() + array.tobytes())
        digest.update("\x00".join(self.labels).encode("utf-8"))
        return digest.hexdigest()

    @functools.cached_property
    def confidence_bins(self) -> tuple[tuple[float, ...], np.ndarray]:
        edges = quantile_edges(self.confidence, PSI_BINS)
        return edges, open_bin_counts(self.confidence, edges)

    @functools.cached_property
    def token_length_bins(self) -> tuple[tuple[float, ...], np.ndarray]:
        edges = quantile_edges(self.token_length, PSI_BINS)
        return edges, open_bin_counts(self.token_length, edges)

    @functools.cached_property
    def calibration(self) -> Calibration | None:
        if self.correct is None or not self.confidence.size:
            return None
        return Calibration.fit(self.confidence, self.correct)


@dataclass(frozen=True, eq=False)
class WindowRows:
    """One window of live rows (never overlapping the last one tested): the same columns as the reference, with
    no labels. ``confidence`` and ``predicted`` are empty for an embedder."""

    confidence: np.ndarray
    predicted: np.ndarray
    token_length: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "confidence", _column(self.confidence, np.float64, "confidence"))
        object.__setattr__(self, "predicted", _column(self.predicted, np.int64, "predicted"))
        object.__setattr__(self, "token_length", _column(self.token_length, np.int64, "token_length"))
        rows = len(self.token_length)
        if len(self.confidence) not in (0, rows) or len(self.predicted) != len(self.confidence):
            raise ValueError(f"window columns differ in length: {len(self.confidence)} confidences, "
                             f"{len(self.predicted)} predicted labels, {rows} token lengths")

    @property
    def rows(self) -> int:
        return len(self.token_length)


@dataclass(frozen=True)
class DriftTest:
    """One drift test of one window. ``statistic`` against ``threshold``: the upper tail for the PSIs and the
    label mix (fired: statistic > threshold); for ``estimated_accuracy`` the statistic is the change (estimated
    accuracy of the window - reference accuracy) and fires below the (negative) threshold."""

    name: str
    statistic: float
    threshold: float
    window: int
    alpha: float
    fired: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "statistic": round(self.statistic, 6), "threshold": round(self.threshold, 6),
                "window": self.window, "alpha": self.alpha, "fired": self.fired}


_MEMO_SIZE = 256
_THRESHOLDS: OrderedDict[tuple[Any, ...], float] = OrderedDict()  # per warm Lambda container: computed once


def null_thresholds(reference: ReferenceSample, window: int, alpha: float = DRIFT_ALPHA, draws: int = NULL_DRAWS,
                    seed: int = 0) -> dict[str, float]:
    """The threshold of each drift test that ``reference`` supports at this window size, memoised on
    (:attr:`ReferenceSample.key`, test, window, alpha, draws, seed): a monitor's warm container computes them once.
    Storable (a dict of floats) for a caller that prefers to compute them at build time."""
    if reference.rows < MIN_REFERENCE_ROWS:
        raise ValueError(f"the reference sample has {reference.rows} rows; drift tests need {MIN_REFERENCE_ROWS}")
    computations: dict[str, Callable[[], float]] = {
        "token_length_psi": lambda: null_threshold(reference.token_length, window, psi_statistic(), alpha, draws,
                                                   seed)}
    if reference.confidence.size:
        computations["confidence_psi"] = lambda: null_threshold(reference.confidence, window, psi_statistic(),
                                                                alpha, draws, seed)
        computations["label_mix_js"] = lambda: null_threshold(
            reference.predicted, window, label_mix_statistic(len(reference.labels)), alpha, draws, seed)
        if reference.correct is not None:
            correct = reference.correct
            computations["estimated_accuracy"] = lambda: estimated_accuracy_null(
                reference.confidence, correct, window, alpha, draws, seed)
    thresholds = {}
    for name in DRIFT_TESTS:
        if name not in computations:
            continue
        memo_key = (reference.key, name, window, alpha, draws, seed)
        if memo_key in _THRESHOLDS:
            _THRESHOLDS.move_to_end(memo_key)
        else:
            _THRESHOLDS[memo_key] = computations[name]()
            while len(_THRESHOLDS) > _MEMO_SIZE:
                _THRESHOLDS.popitem(last=False)
        thresholds[name] = _THRESHOLDS[memo_key]
    return thresholds


def drift_tests(reference: ReferenceSample, window_rows: WindowRows, alpha: float = DRIFT_ALPHA, *,
                draws: int = NULL_DRAWS, seed: int = 0, thresholds: Mapping[str, float] | None = None,
                calibration: Calibration | None = None) -> list[DriftTest]:
    """The drift tests of one window against the whole reference, in :data:`DRIFT_TESTS` order: those that both
    support (confidence and label mix need a classifier; estimated accuracy a labelled reference).

    ``thresholds`` (from :func:`null_thresholds`) skip the null draws; ``calibration`` replaces the one fitted on
    the reference (the manifest's, say). Each test fires with probability at most ``alpha`` on a window like the
    reference, so the window must be one not tested before (module docstring).
    """
    window = window_rows.rows
    if window < MIN_DRIFT_ROWS:
        raise ValueError(f"a drift window needs at least {MIN_DRIFT_ROWS} rows, got {window}")
    limits = dict(thresholds) if thresholds is not None else null_thresholds(reference, window, alpha, draws, seed)
    tests = []
    has_scores = bool(reference.confidence.size and window_rows.confidence.size)
    for name in DRIFT_TESTS:
        if name not in limits or (name != "token_length_psi" and not has_scores):
            continue
        if name == "token_length_psi":
            edges, counts = reference.token_length_bins
            value = psi(counts, open_bin_counts(window_rows.token_length, edges))
        elif name == "confidence_psi":
            edges, counts = reference.confidence_bins
            value = psi(counts, open_bin_counts(window_rows.confidence, edges))
        elif name == "label_mix_js":
            n_labels = len(reference.labels)
            value = js_divergence(_label_counts(reference.predicted, n_labels),
                                  _label_counts(window_rows.predicted, n_labels))
        else:
            fitted = calibration or reference.calibration
            accuracy = reference.accuracy
            if fitted is None or accuracy is None:
                continue
            value = estimated_accuracy(fitted, window_rows.confidence) - accuracy
        limit = limits[name]
        fired = value < limit if name == "estimated_accuracy" else value > limit
        tests.append(DriftTest(name=name, statistic=value, threshold=limit, window=window, alpha=alpha,
                               fired=bool(fired)))
    return tests


# ------------------------------------------------------------------------------------------ the accuracy test


@dataclass(frozen=True)
class AccuracyTest:
    """An exact one-sided binomial test of one window of labels: is the live accuracy below ``tested_against``,
    the reference accuracy less ``margin`` (one standard error of the reference accuracy)? ``p_value`` is
    P(at most ``correct`` right of ``n`` | accuracy = tested_against); ``fired`` when it is below ``alpha``."""

    correct: int
    n: int
    accuracy: float
    reference_accuracy: float
    margin: float
    tested_against: float
    p_value: float
    alpha: float
    fired: bool

    def to_dict(self) -> dict[str, Any]:
        return {"correct": self.correct, "n": self.n, "accuracy": round(self.accuracy, 6),
                "reference_accuracy": round(self.reference_accuracy, 6), "margin": round(self.margin, 6),
                "tested_against": round(self.tested_against, 6), "p_value": self.p_value, "alpha": self.alpha,
                "fired": self.fired}


def accuracy_drop_test(correct: int, n: int, reference_accuracy: float, reference_n: int,
                       alpha: float = ACCURACY_ALPHA) -> AccuracyTest:
    """Test H0: live accuracy >= reference_accuracy - margin on one window of ``n`` labels, ``correct`` of them
    right; margin = sqrt(p (1 - p) / reference_n), the reference accuracy's standard error.

    Exact (:func:`binomial_cdf`): at 150 labels and accuracies near 0.9 the normal approximation misstates the
    lower tail. The window must not overlap one tested before (module docstring): then a healthy model fires in
    at most ``alpha`` of windows.
    """
    if n < 1 or not 0 <= correct <= n:
        raise ValueError(f"accuracy_drop_test needs n >= 1 and 0 <= correct <= n, got {correct} of {n}")
    if not 0.0 <= reference_accuracy <= 1.0 or reference_n < 1:
        raise ValueError(f"accuracy_drop_test needs a reference accuracy in [0, 1] on >= 1 text, got "
                         f"{reference_accuracy} on {reference_n}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    margin = math.sqrt(reference_accuracy * (1 - reference_accuracy) / reference_n)
    tested_against = max(0.0, reference_accuracy - margin)
    p_value = binomial_cdf(correct, n, tested_against)
    return AccuracyTest(correct=correct, n=n, accuracy=correct / n, reference_accuracy=reference_accuracy,
                        margin=margin, tested_against=tested_against, p_value=p_value, alpha=alpha,
                        fired=p_value < alpha)


__all__ = [
    "ACCURACY_ALPHA", "ACCURACY_WINDOW", "CALIBRATION_STEPS", "DRIFT_ALPHA", "DRIFT_TESTS", "DRIFT_WINDOW",
    "MIN_DRIFT_ROWS", "MIN_REFERENCE_ROWS", "NULL_DRAWS", "PSI_BINS", "SMOOTHING", "AccuracyTest", "Calibration",
    "DriftTest", "LabelMixStatistic", "PsiStatistic", "ReferenceSample", "Statistic", "WindowRows",
    "accuracy_drop_test", "binomial_cdf", "bootstrap_interval", "drift_tests", "estimated_accuracy",
    "estimated_accuracy_null", "isotonic", "js_divergence", "label_mix_statistic", "normal_quantile",
    "null_threshold", "null_thresholds", "open_bin_counts", "psi", "psi_statistic", "quantile_edges",
    "wilson_interval",
]
