"""The gate: does a retrained candidate replace the live model? Decided unattended, per slice and per metric.

A plain accuracy gate blesses a worse model (../shared/DRIFT.md): a candidate retrained on a topic's feedback
learns the topic's label prior, gains a point of accuracy, and drops the topic's macro-F1 from 0.70 to 0.58 and
its negative recall from 0.60 to 0.15. So the gate follows TensorFlow Model Analysis: a list of :class:`Check`,
each on one **slice** (``reference``: the in-domain test split; ``feedback``: the labelled texts of the new topic)
and one **metric** (:data:`METRICS`, or ``recall:<label>``), with a **value threshold** (``min_value``: the
candidate's figure must reach it) and/or a **change threshold** against the live model with a **direction**:

* ``higher``: the candidate must be *significantly* better: the lower bound of the paired bootstrap interval of
  (candidate - live) must be above ``min_delta`` (0: any improvement that noise cannot explain; a negative
  ``min_delta`` makes it a non-inferiority test: "significantly no worse than by that much").
* ``not_worse``: fails if the candidate is significantly worse (the interval's upper bound is below 0), or if
  its point change is a drop of more than ``max_drop``.

A slice with fewer than ``min_rows`` rows fails every check on it: a gate that cannot measure must not bless.

**Why significance, not a margin.** Slices have 100 to 300 rows (277 texts, 55 of them negative): one text is 0.4
points of accuracy and nearly 2 points of that slice's negative recall, so a fixed margin of a point or two is
noise, which would bless and reject at random. Every change is measured on the *same rows* for both models (paired),
which removes the rows' own difficulty from the comparison: two models that agree on 90% of the texts differ far
less, by chance, than two independent samples of 277 would. Interval: the paired percentile bootstrap of
(metric(candidate) - metric(live)), ``draws`` resamples of the slice's rows (each resample the same rows for both
models), seeded, so a gate decides the same way every time it sees the same predictions. At ``confidence`` 0.95 a
candidate no better than live should pass ``higher`` with probability about 2.5% (the interval's lower tail);
measured over 2,000 slices of 120 rows, it passed on macro-F1 in 3.2% and on accuracy in 1.7%
(``tests/unit/test_gate.py`` keeps it under 6% on 300 of them), and stays under 5% for candidates that differ from
live on only a handful of rows, where a percentile bootstrap alone is optimistic (below). For ``accuracy`` the exact
McNemar test of the discordant rows (:func:`mcnemar_exact`) is reported beside the interval.

**Few discordant rows.** When the models differ on only a few rows, every resample sees few of them and the
percentile interval comes out too narrow: 4 rows won and none lost put its lower bound above 0 although
McNemar's exact p is 0.125, and such candidates passed ``higher`` in 6.6% of simulated no-difference cases. So
``higher`` also needs the discordant rows to be able to say so: at least :func:`min_discordant` of them (the
fewest whose most lopsided split McNemar's exact test finds significant: 6 at 0.95, 8 at 0.99), and, for
``accuracy``, McNemar's two-sided p below 1 - ``confidence`` with the candidate ahead (the same tail as the
interval's lower bound). Measured with no true difference, 1,000 slices of 150 rows for each number of
discordant rows from 3 to 40: ``higher`` on macro-F1 passes in at most 3.3% of them, on accuracy in at most
2.4%.

**Resampling by kind of row.** A row matters to every metric only through its (truth, live, candidate) triple,
so a slice is reduced to its distinct triples and their counts (at most k^3 of them for k classes), and a
bootstrap resample of the n rows is drawn as a multinomial over the triples (n draws, probabilities count / n):
exactly the distribution of the triples' counts when n row indexes are drawn with replacement, at a cost that
does not grow with n (2,000 draws of a 3,000-row slice: milliseconds). Both models' confusion matrices come
from the same draw: the pairing is kept.

**Metrics** follow :func:`ferry.metrics.classification_metrics`, so the gate and the training report agree:
``accuracy``; ``macro_f1``, the mean over *all* the slice's labels of each class's F1, a class with no
predictions or no rows scoring 0 (never NaN); ``recall:<label>``, that class's recall. ``balanced_accuracy`` is
the mean recall over the classes that have rows (as scikit-learn defines it; a class without rows has no
recall). A resample in which the checked class has no rows has no recall: it is left out of that interval (a
0 - 0 there would pull the interval toward "no change"). A slice with no row of the checked class fails the
check.

**The default gate** (:data:`DEFAULT_GATE`, and ``gate.json`` at the repository root, which must equal it):

* ``feedback macro_f1 higher``: a candidate exists to fix the slice the feedback came from; if it does not fix
  it measurably, keeping the live model costs nothing. Macro-F1, not accuracy, because accuracy rewards
  learning the slice's prior (80% positive): it is the check that rejects DRIFT.md's candidate.
* ``feedback balanced_accuracy not_worse``, ``max_drop`` 0.05: macro-F1 can rise through one class's precision
  while the minority class's recall falls; balanced accuracy weighs that recall by the class, not by its share.
  0.05 and not 0.02: on 277 rows (55 in the minority) the point change of an equally good candidate varies by
  about 0.027, and in simulation fell below -0.02 in 23% of slices (below -0.05 in 4%): a 0.02 margin would
  reject one good candidate in five by chance. A significant drop fails whatever its size.
* ``reference macro_f1 not_worse`` and ``reference accuracy not_worse``, ``max_drop`` 0.02: the fix must not
  cost the traffic that was fine. The reference (the test split, thousands of rows) measures a change to a few
  tenths of a point, so a 2-point drop is never noise there, and a significant drop of any size fails too.
* ``min_rows`` 100: below that, one text moves a small class's recall by several points and an interval at
  95% spans most of the scale. ``confidence`` 0.95, ``draws`` 2,000 (the 2.5% quantile then rests on 50
  draws: it moves by about 0.002 between seeds), ``seed`` 0.

What the feedback checks do, simulated on slices like DRIFT.md's (277 rows, 55 negatives, live negative recall
0.60 and positive recall 0.83, the two models agreeing on most rows; 300 slices each): a candidate at 0.75 /
0.88 passes 91% of the time, one at 0.68 / 0.86 48%, one no better than live 2.3%, and the prior-learner (0.15 /
0.95, more accurate) never. Each ``not_worse`` check fails an equally good candidate with probability about
2.5% (the interval's upper tail): the gate errs toward keeping the live model, which costs nothing.

This module runs in Lambda (the gate step of the update): numpy, :mod:`ferry.metrics` and :mod:`ferry.runtime`
modules only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ferry.exceptions import EXIT_USAGE
from ferry.metrics import classification_metrics
from ferry.runtime.exceptions import FerryRuntimeError
from ferry.runtime.fields import JsonFields, show
from ferry.runtime.stats import binomial_cdf

METRICS = ("macro_f1", "balanced_accuracy", "accuracy")  # and "recall:<label>"
RECALL = "recall:"
DIRECTIONS = ("higher", "not_worse")
MIN_DRAWS = 100  # fewer, and the interval's 2.5% quantile rests on two or three draws
MAX_DRAWS = 100_000  # a bound on the gate's time and memory in Lambda
_CELLS_PER_CHUNK = 1 << 20  # draws x kinds of row resampled at once (8 MiB of counts)


class GateConfigError(FerryRuntimeError):
    """A gate file or configuration that cannot be used: its message names the file (or ``gate config``) and the
    field, such as ``gate.json: checks[1].metric must be one of ...``."""

    code = "invalid_gate"
    exit_status = EXIT_USAGE


class GateResultError(FerryRuntimeError):
    """A stored gate result (the registry's JSON) that cannot be read back."""

    code = "invalid_gate_result"


# --------------------------------------------------------------------------------------------- configuration


def _is_metric(metric: Any) -> bool:
    if not isinstance(metric, str):
        return False
    return metric in METRICS or (metric.startswith(RECALL) and len(metric) > len(RECALL))


def _number(value: Any, name: str, low: float, high: float, *, low_open: bool = False,
            high_open: bool = False) -> float:
    """``value`` as a float in the range, else a GateConfigError naming ``name``."""
    in_range = (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
                and (low < value if low_open else low <= value) and (value < high if high_open else value <= high))
    if not in_range:
        bounds = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise GateConfigError(f"must be a number in {bounds}, got {show(value)}", field=name)
    return float(value)


def _integer(value: Any, name: str, low: int, high: int | None = None) -> int:
    if (isinstance(value, bool) or not isinstance(value, int) or value < low
            or (high is not None and value > high)):
        expected = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
        raise GateConfigError(f"must be {expected}, got {show(value)}", field=name)
    return value


@dataclass(frozen=True)
class Check:
    """One check of the candidate on one slice and one metric (module docstring): ``min_value`` and/or a
    ``direction`` against the live model, ``min_delta`` for ``higher`` and ``max_drop`` for ``not_worse``."""

    slice: str
    metric: str
    min_value: float | None = None
    direction: str | None = None
    min_delta: float = 0.0
    max_drop: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.slice, str) or not self.slice:
            raise GateConfigError(f"must be a non-empty string, got {show(self.slice)}", field="slice")
        if not _is_metric(self.metric):
            raise GateConfigError(f"must be one of {', '.join(METRICS)} or recall:<label>, got "
                                  f"{show(self.metric)}", field="metric")
        if self.direction is not None and self.direction not in DIRECTIONS:
            raise GateConfigError(f"must be one of {', '.join(DIRECTIONS)}, got {show(self.direction)}",
                                  field="direction")
        if self.min_value is None and self.direction is None:
            raise GateConfigError("checks nothing: give it min_value, direction or both")
        if self.min_value is not None:
            object.__setattr__(self, "min_value", _number(self.min_value, "min_value", 0.0, 1.0))
        object.__setattr__(self, "min_delta", _number(self.min_delta, "min_delta", -1.0, 1.0, low_open=True,
                                                      high_open=True))
        object.__setattr__(self, "max_drop", _number(self.max_drop, "max_drop", 0.0, 1.0))
        if self.min_delta != 0.0 and self.direction != "higher":
            raise GateConfigError("applies to direction 'higher' only", field="min_delta")
        if self.max_drop != 1.0 and self.direction != "not_worse":
            raise GateConfigError("applies to direction 'not_worse' only", field="max_drop")

    @property
    def label(self) -> str | None:
        """The class of a ``recall:<label>`` check, else None."""
        return self.metric[len(RECALL):] if self.metric.startswith(RECALL) else None

    def to_dict(self) -> dict[str, Any]:
        """The fields that apply: ``min_delta`` with ``higher``, ``max_drop`` with ``not_worse``."""
        data: dict[str, Any] = {"slice": self.slice, "metric": self.metric}
        if self.min_value is not None:
            data["min_value"] = self.min_value
        if self.direction is not None:
            data["direction"] = self.direction
        if self.direction == "higher":
            data["min_delta"] = self.min_delta
        if self.direction == "not_worse":
            data["max_drop"] = self.max_drop
        return data


_CHECK_KEYS = tuple(field.name for field in fields(Check))
_CONFIG_KEYS = ("checks", "min_rows", "confidence", "draws", "seed")


def _strict_keys(data: Any, known: Sequence[str], source: str, where: str) -> dict[str, Any]:
    """``data`` as a JSON object holding only ``known`` keys, else a GateConfigError naming ``where``."""
    if not isinstance(data, dict):
        raise GateConfigError(f"{source}: {where or 'the gate'} must be a JSON object, got {type(data).__name__}")
    unknown = [key for key in data if key not in known]
    if unknown:
        at = f"{where}: " if where else ""
        raise GateConfigError(f"{source}: {at}unknown field(s) {', '.join(map(repr, unknown))} (known: "
                              f"{', '.join(known)})")
    return data


def _at(source: str, where: str, error: GateConfigError) -> GateConfigError:
    """``error`` (raised by a constructor, naming its field) as the error about ``where`` in ``source``."""
    path = ".".join(part for part in (where, error.field) if part)
    return GateConfigError(f"{source}: {path} {error.detail}" if path else f"{source}: {error.detail}")


@dataclass(frozen=True)
class GateConfig:
    """The checks, and how they are measured: ``min_rows`` a slice needs, the interval's ``confidence``, the
    bootstrap's ``draws`` and ``seed``. Validated on construction; :meth:`from_dict` reads a gate file."""

    checks: tuple[Check, ...]
    min_rows: int = 100
    confidence: float = 0.95
    draws: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        checks = self.checks
        if not isinstance(checks, list | tuple) or not checks:
            raise GateConfigError(f"must hold at least one check, got {show(checks)}", field="checks")
        for index, check in enumerate(checks):
            if not isinstance(check, Check):
                raise GateConfigError(f"must be a Check, got {type(check).__name__}", field=f"checks[{index}]")
        object.__setattr__(self, "checks", tuple(checks))
        _integer(self.min_rows, "min_rows", 1)
        object.__setattr__(self, "confidence", _number(self.confidence, "confidence", 0.0, 1.0, low_open=True,
                                                       high_open=True))
        _integer(self.draws, "draws", MIN_DRAWS, MAX_DRAWS)
        _integer(self.seed, "seed", 0)

    @classmethod
    def from_dict(cls, data: Any, source: str = "gate config") -> GateConfig:
        """Read a gate (``to_dict()``'s shape) strictly: an unknown key, a wrong type or a value out of range is a
        GateConfigError naming ``source`` and the field (``gate.json: checks[1].metric must be ...``)."""
        document = _strict_keys(data, _CONFIG_KEYS, source, "")
        raw_checks = document.get("checks")
        if not isinstance(raw_checks, list) or not raw_checks:
            raise GateConfigError(f"{source}: checks must be a non-empty list of checks, got {show(raw_checks)}")
        checks = []
        for index, raw in enumerate(raw_checks):
            where = f"checks[{index}]"
            entry = _strict_keys(raw, _CHECK_KEYS, source, where)
            missing = [key for key in ("slice", "metric") if key not in entry]
            if missing:
                raise GateConfigError(f"{source}: {where}: missing field(s) {', '.join(missing)}")
            try:
                checks.append(Check(**entry))
            except GateConfigError as error:
                raise _at(source, where, error) from None
        try:
            return cls(checks=tuple(checks), **{key: value for key, value in document.items() if key != "checks"})
        except GateConfigError as error:
            raise _at(source, "", error) from None

    @classmethod
    def load(cls, path: Path) -> GateConfig:
        """A gate file (JSON); a missing or unreadable file, or one that is not JSON, is a GateConfigError
        naming it."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise GateConfigError(f"{path}: cannot read the gate file: {error.strerror or error}") from None
        except UnicodeDecodeError as error:
            raise GateConfigError(f"{path}: the gate file is not UTF-8 text: {error.reason}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise GateConfigError(f"{path}: not valid JSON: {error.msg} at line {error.lineno} column "
                                  f"{error.colno}") from None
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return {"checks": [check.to_dict() for check in self.checks], "min_rows": self.min_rows,
                "confidence": self.confidence, "draws": self.draws, "seed": self.seed}


DEFAULT_GATE = GateConfig(checks=(
    Check("feedback", "macro_f1", direction="higher"),
    Check("feedback", "balanced_accuracy", direction="not_worse", max_drop=0.05),
    Check("reference", "macro_f1", direction="not_worse", max_drop=0.02),
    Check("reference", "accuracy", direction="not_worse", max_drop=0.02),
))
"""The project's gate (module docstring: why each check and threshold); ``gate.json`` holds the same."""


# ------------------------------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class SliceData:
    """One slice's rows, paired: the true class of each row and the class each model predicted for it, as indexes
    into ``labels``. A wrong shape or an index out of range is a ValueError (a caller's bug, not a config's)."""

    name: str
    labels: tuple[str, ...]
    truth: Sequence[int]
    live: Sequence[int]
    candidate: Sequence[int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        if not self.labels or len(set(self.labels)) != len(self.labels):
            raise ValueError(f"slice {self.name!r}: labels must be distinct and at least one, got {self.labels}")
        lengths = {len(self.truth), len(self.live), len(self.candidate)}
        if len(lengths) != 1:
            raise ValueError(f"slice {self.name!r}: truth, live and candidate differ in length: {len(self.truth)}, "
                             f"{len(self.live)}, {len(self.candidate)}")
        for column in ("truth", "live", "candidate"):
            values = np.asarray(getattr(self, column))
            if values.size and (values.ndim != 1 or not np.issubdtype(values.dtype, np.integer)
                                or values.min() < 0 or values.max() >= len(self.labels)):
                raise ValueError(f"slice {self.name!r}: {column} must hold class indexes from 0 to "
                                 f"{len(self.labels) - 1}")

    @property
    def rows(self) -> int:
        return len(self.truth)


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome: both models' figures, the change, its interval (``None`` where nothing was
    resampled: a missing slice, too few rows) and, for ``accuracy``, McNemar's exact p."""

    slice: str
    metric: str
    live: float | None
    candidate: float | None
    delta: float | None
    interval: tuple[float, float] | None
    p_value: float | None
    passed: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"slice": self.slice, "metric": self.metric, "live": self.live, "candidate": self.candidate,
                "delta": self.delta, "interval": None if self.interval is None else list(self.interval),
                "p_value": self.p_value, "passed": self.passed, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Any, source: str = "gate result", where: str = "") -> CheckResult:
        read = JsonFields(data, source, where, error=GateResultError)
        read.require("slice", "metric", "passed", "reason")
        interval = read.raw("interval")
        if interval is not None:
            bounds = read.numbers("interval")
            if len(bounds) != 2:
                raise read.error("interval", "two numbers or null")
        return cls(slice=read.required_text("slice"), metric=read.required_text("metric"),
                   live=read.number("live"), candidate=read.number("candidate"), delta=read.number("delta"),
                   interval=None if interval is None else (bounds[0], bounds[1]), p_value=read.number("p_value"),
                   passed=read.flag("passed", False), reason=read.text("reason") or "")


@dataclass(frozen=True)
class GateResult:
    """The verdict (every check passed, and there was at least one), each check's result, each slice's figures
    (rows, both models' :meth:`ClassificationMetrics.to_dict`, the McNemar counts) and the config that decided."""

    passed: bool
    checks: tuple[CheckResult, ...]
    slices: Mapping[str, dict[str, Any]]
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [check.to_dict() for check in self.checks],
                "slices": {name: figures for name, figures in self.slices.items()}, "config": self.config}

    @classmethod
    def from_dict(cls, data: Any) -> GateResult:
        """Read back ``to_dict()`` (the registry's JSON); a wrong field is a GateResultError naming it."""
        source = "gate result"
        read = JsonFields(data, source, error=GateResultError)
        read.require("passed", "checks", "slices", "config")
        checks = tuple(CheckResult.from_dict(entry, source, f"checks[{index}]")
                       for index, entry in enumerate(read.objects("checks")))
        slices = read.obj("slices") or {}
        for name, figures in slices.items():
            if not isinstance(figures, dict):
                raise GateResultError(f"{source}: slices.{name} must be a JSON object, got {show(figures)}")
        try:
            config = GateConfig.from_dict(read.obj("config"), source=f"{source}: config").to_dict()
        except GateConfigError as error:
            raise GateResultError(str(error)) from None
        passed = read.flag("passed", False)
        if passed != (bool(checks) and all(check.passed for check in checks)):
            raise GateResultError(f"{source}: passed is {passed}, but the checks say otherwise")
        return cls(passed=passed, checks=checks, slices=dict(slices), config=config)

    def summary(self) -> str:
        """One line per check: PASS or FAIL, then its reason."""
        return "\n".join(f"{'PASS' if check.passed else 'FAIL'} {check.reason}" for check in self.checks)


# --------------------------------------------------------------------------------------------------- metrics


def mcnemar_exact(live_only_right: int, candidate_only_right: int) -> float:
    """McNemar's exact two-sided p: of the b + c rows that exactly one model gets right, is the split b : c
    further from even than chance allows? ``2 P(X <= min(b, c))`` for X ~ Binomial(b + c, 1/2), at most 1."""
    for name, value in (("live_only_right", live_only_right), ("candidate_only_right", candidate_only_right)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"{name} must be a count (an integer >= 0), got {value!r}")
    discordant = int(live_only_right) + int(candidate_only_right)
    if discordant == 0:
        return 1.0
    return min(1.0, 2.0 * binomial_cdf(min(int(live_only_right), int(candidate_only_right)), discordant, 0.5))


def min_discordant(confidence: float) -> int:
    """The fewest discordant rows (one model right, the other wrong) on which McNemar's exact two-sided test can
    be significant at ``confidence``: the smallest m with 2 x 0.5^m < 1 - confidence (6 at 0.95, 8 at 0.99)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return math.floor(math.log2(2 / (1 - confidence))) + 1


def _ratio(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """part / whole, 0 where whole is 0 (as ferry.metrics: a class never predicted or absent scores 0)."""
    ratio: np.ndarray = np.divide(part, whole, out=np.zeros(np.broadcast(part, whole).shape), where=whole > 0)
    return ratio


def metric_values(confusion: np.ndarray, metric: str, label: int | None = None) -> np.ndarray:
    """``metric`` of each confusion matrix in ``confusion`` (shape (..., k, k), rows true classes), vectorised;
    NaN where it is undefined (a recall of a class with no rows). ``label``: the class of ``recall:<label>``."""
    matrix = np.asarray(confusion, dtype=np.float64)
    correct = np.diagonal(matrix, axis1=-2, axis2=-1)
    support = matrix.sum(axis=-1)
    if metric == "accuracy":
        return _ratio(correct.sum(axis=-1), support.sum(axis=-1))
    recall = _ratio(correct, support)
    if metric == "macro_f1":
        precision = _ratio(correct, matrix.sum(axis=-2))
        f1 = _ratio(2 * precision * recall, precision + recall)
        mean: np.ndarray = f1.mean(axis=-1)
        return mean
    if metric == "balanced_accuracy":
        present = support > 0
        return np.where(present.any(axis=-1), _ratio((recall * present).sum(axis=-1), present.sum(axis=-1)),
                        np.nan)
    if metric.startswith(RECALL) and label is not None:
        return np.where(support[..., label] > 0, recall[..., label], np.nan)
    raise ValueError(f"unknown metric {metric!r}")


@dataclass(frozen=True)
class _Paired:
    """A slice reduced to its kinds of row: each distinct (truth, live, candidate) triple and how many rows it
    has. Every metric of both models is a function of these counts."""

    classes: int
    kinds: np.ndarray  # (T, 3) int: truth, live, candidate
    counts: np.ndarray  # (T,) int

    @classmethod
    def of(cls, data: SliceData) -> _Paired:
        k = len(data.labels)
        codes = (np.asarray(data.truth, dtype=np.int64) * k + np.asarray(data.live, dtype=np.int64)) * k + \
            np.asarray(data.candidate, dtype=np.int64)
        kinds, counts = np.unique(codes, return_counts=True)
        triples = np.stack([kinds // (k * k), (kinds // k) % k, kinds % k], axis=1)
        return cls(classes=k, kinds=triples, counts=counts.astype(np.int64))

    @property
    def rows(self) -> int:
        return int(self.counts.sum())

    def confusions(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Both models' confusion matrices (shape (..., k, k)) for counts of the kinds (shape (..., T))."""
        k = self.classes
        truth, live, candidate = self.kinds.T
        live_cells = np.zeros((len(self.counts), k * k))
        live_cells[np.arange(len(self.counts)), truth * k + live] = 1.0
        candidate_cells = np.zeros((len(self.counts), k * k))
        candidate_cells[np.arange(len(self.counts)), truth * k + candidate] = 1.0
        weights = np.asarray(counts, dtype=np.float64)
        shape = (*weights.shape[:-1], k, k)
        return (weights @ live_cells).reshape(shape), (weights @ candidate_cells).reshape(shape)

    def resamples(self, draws: int, seed: int) -> Iterator[np.ndarray]:
        """``draws`` bootstrap resamples of the rows as counts of the kinds, in chunks: a multinomial of n over
        the kinds, which is what n row indexes drawn with replacement give (module docstring)."""
        rng = np.random.default_rng(seed)
        shares = self.counts / self.rows
        chunk = max(1, _CELLS_PER_CHUNK // len(self.counts))
        for start in range(0, draws, chunk):
            yield rng.multinomial(self.rows, shares, size=min(chunk, draws - start))

    def mcnemar(self) -> dict[str, Any]:
        truth, live, candidate = self.kinds.T
        live_only = int(self.counts[(live == truth) & (candidate != truth)].sum())
        candidate_only = int(self.counts[(candidate == truth) & (live != truth)].sum())
        return {"live_only_right": live_only, "candidate_only_right": candidate_only,
                "p_value": mcnemar_exact(live_only, candidate_only)}

    def discordant(self) -> int:
        """Rows on which the two models predict differently."""
        return int(self.counts[self.kinds[:, 1] != self.kinds[:, 2]].sum())


def _bootstrap(paired: _Paired, metrics: Mapping[str, int | None], config: GateConfig
               ) -> dict[str, tuple[float, float] | None]:
    """The paired percentile interval of (candidate - live) for each metric, from one set of resamples (the same
    draws for every metric of the slice); None where no resample defines the metric."""
    deltas: dict[str, list[np.ndarray]] = {metric: [] for metric in metrics}
    for counts in paired.resamples(config.draws, config.seed):
        live, candidate = paired.confusions(counts)
        for metric, label in metrics.items():
            deltas[metric].append(metric_values(candidate, metric, label) - metric_values(live, metric, label))
    tail = (1 - config.confidence) / 2
    intervals: dict[str, tuple[float, float] | None] = {}
    for metric, parts in deltas.items():
        values = np.concatenate(parts)
        values = values[~np.isnan(values)]
        if values.size == 0:
            intervals[metric] = None
            continue
        low, high = np.quantile(values, [tail, 1 - tail])
        intervals[metric] = (float(low), float(high))
    return intervals


# ---------------------------------------------------------------------------------------------------- verdict


def _label_index(index: int, check: Check, data: SliceData) -> int | None:
    label = check.label
    if label is None:
        return None
    if label not in data.labels:
        raise GateConfigError(f"gate config: checks[{index}].metric names label {label!r}, which slice "
                              f"{data.name!r} does not have (labels: {', '.join(data.labels)})")
    return data.labels.index(label)


@dataclass(frozen=True)
class _Measured:
    """What a check is decided on."""

    live: float
    candidate: float
    interval: tuple[float, float] | None
    p_value: float | None
    discordant: int


def _fmt(value: float) -> str:
    return f"{value:+.3f}"


def _higher(check: Check, measured: _Measured, config: GateConfig) -> tuple[bool, str]:
    low, high = measured.interval or (math.nan, math.nan)
    by = f" by more than {_fmt(check.min_delta)}" if check.min_delta else ""
    fewest = min_discordant(config.confidence)
    if measured.discordant < fewest:
        return False, (f"not significantly higher{by}: the models differ on {measured.discordant} rows, fewer than "
                       f"the {fewest} a significant difference needs")
    if high < 0:
        return False, "significantly lower (the interval lies below 0)"
    if not low > check.min_delta:
        return False, (f"not significantly higher{by} (the interval's lower bound {_fmt(low)} is not above "
                       f"{_fmt(check.min_delta)})")
    ahead = measured.candidate > measured.live
    if measured.p_value is not None and not (measured.p_value < 1 - config.confidence and ahead):
        return False, f"not significantly higher{by} (McNemar p={measured.p_value:.3g})"
    return True, f"significantly higher{by}"


def _not_worse(check: Check, measured: _Measured) -> tuple[bool, str]:
    _, high = measured.interval or (math.nan, math.nan)
    delta = measured.candidate - measured.live
    if high < 0:
        return False, "significantly worse (the interval lies below 0)"
    if delta < -check.max_drop:
        return False, f"dropped {-delta:.3f}, more than the {check.max_drop:.3f} allowed"
    allowed = f", and within the {check.max_drop:.3f} drop allowed" if check.max_drop < 1 else ""
    return True, f"not significantly worse{allowed}"


def _decide(check: Check, measured: _Measured, config: GateConfig) -> tuple[bool, str]:
    """(passed, what the check found), per the module docstring: the reason names what failed, or else what
    passed."""
    findings: list[tuple[bool, str]] = []
    if check.min_value is not None:
        reached = measured.candidate >= check.min_value
        findings.append((reached, f"{'reaches' if reached else 'below'} the minimum {check.min_value:.3f}"))
    if check.direction is not None and measured.interval is None:
        findings.append((False, "no resample measured it"))
    elif check.direction == "higher":
        findings.append(_higher(check, measured, config))
    elif check.direction == "not_worse":
        findings.append(_not_worse(check, measured))
    passed = all(ok for ok, _ in findings)
    return passed, "; ".join(text for ok, text in findings if ok is passed)


def _check_result(check: Check, measured: _Measured, config: GateConfig) -> CheckResult:
    delta = measured.candidate - measured.live
    figures = [_fmt(delta)]
    if measured.interval is not None:
        figures.append(f"{config.confidence * 100:g}% CI {_fmt(measured.interval[0])}..{_fmt(measured.interval[1])}")
    if measured.p_value is not None:
        figures.append(f"McNemar p={measured.p_value:.3g}")
    passed, found = _decide(check, measured, config)
    reason = (f"{check.metric} on {check.slice}: {measured.candidate:.3f} vs live {measured.live:.3f} "
              f"({', '.join(figures)}): {found}")
    return CheckResult(slice=check.slice, metric=check.metric, live=measured.live, candidate=measured.candidate,
                       delta=delta, interval=measured.interval, p_value=measured.p_value, passed=passed,
                       reason=reason)


def _failed(check: Check, problem: str, live: float | None = None, candidate: float | None = None) -> CheckResult:
    delta = None if live is None or candidate is None else candidate - live
    return CheckResult(slice=check.slice, metric=check.metric, live=live, candidate=candidate, delta=delta,
                       interval=None, p_value=None, passed=False, reason=f"{check.metric} on {check.slice}: {problem}")


def _slice_figures(data: SliceData, paired: _Paired) -> dict[str, Any]:
    return {"rows": data.rows,
            "live": classification_metrics(data.truth, data.live, data.labels).to_dict(),
            "candidate": classification_metrics(data.truth, data.candidate, data.labels).to_dict(),
            "mcnemar": paired.mcnemar()}


def evaluate(config: GateConfig, slices: Mapping[str, SliceData]) -> GateResult:
    """Every check of ``config`` on ``slices`` (keyed by slice name). A check on a slice not given, or on one with
    fewer than ``min_rows`` rows, fails saying so; a ``recall:<label>`` whose label the slice lacks is a
    GateConfigError (the gate was written for another model)."""
    for name, data in slices.items():
        if data.name != name:
            raise ValueError(f"slice {data.name!r} is given under the name {name!r}")
    paired = {name: _Paired.of(data) for name, data in slices.items()}
    labels = {index: _label_index(index, check, slices[check.slice])
              for index, check in enumerate(config.checks) if check.slice in slices}
    wanted: dict[str, dict[str, int | None]] = {}
    for index, check in enumerate(config.checks):
        if check.slice in slices and slices[check.slice].rows >= config.min_rows:
            wanted.setdefault(check.slice, {})[check.metric] = labels[index]
    intervals = {name: _bootstrap(paired[name], metrics, config) for name, metrics in wanted.items()}
    results = []
    for index, check in enumerate(config.checks):
        if check.slice not in slices:
            results.append(_failed(check, f"no such slice: {check.slice!r} (given: {', '.join(slices) or 'none'})"))
            continue
        data = slices[check.slice]
        live, candidate = paired[check.slice].confusions(paired[check.slice].counts)
        live_value = float(metric_values(live, check.metric, labels[index]))
        candidate_value = float(metric_values(candidate, check.metric, labels[index]))
        if data.rows < config.min_rows:
            measured_at_all = not math.isnan(live_value)
            results.append(_failed(check, f"too few rows: {data.rows} < {config.min_rows}",
                                   live_value if measured_at_all else None,
                                   candidate_value if measured_at_all else None))
        elif math.isnan(live_value):  # only a recall is undefined on rows: its class has none
            results.append(_failed(check, f"no rows labelled {check.label!r} in {check.slice}"))
        else:
            mcnemar = paired[check.slice].mcnemar()
            measured = _Measured(live=live_value, candidate=candidate_value,
                                 interval=intervals[check.slice][check.metric],
                                 p_value=mcnemar["p_value"] if check.metric == "accuracy" else None,
                                 discordant=paired[check.slice].discordant())
            results.append(_check_result(check, measured, config))
    figures = {name: _slice_figures(data, paired[name]) for name, data in slices.items()}
    return GateResult(passed=bool(results) and all(result.passed for result in results), checks=tuple(results),
                      slices=figures, config=config.to_dict())


__all__ = [
    "DEFAULT_GATE", "DIRECTIONS", "METRICS", "Check", "CheckResult", "GateConfig", "GateConfigError", "GateResult",
    "GateResultError", "SliceData", "evaluate", "mcnemar_exact", "metric_values", "min_discordant",
]
