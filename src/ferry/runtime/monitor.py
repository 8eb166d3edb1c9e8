"""The monitor: is each live model still right? Labelled and unlabelled evidence, tested honestly, told once.

Each run, for every model the function holds (its live manifest, so its live version), the monitor reads what
happened since its last run and answers with figures and tests:

- **Labelled**: feedback joined with its capture (``prediction_id``). Over the last ``window_minutes``: accuracy,
  macro-F1 and per-class recall, each with its label count and a 95% interval (Wilson; a bootstrap for
  macro-F1), and the share of predictions that got a label. Voluntary feedback is biased toward mistakes:
  labels sent with ``"sampled": true`` (a random audit sample) are counted apart, and the accuracy test uses them
  when a window holds enough of them; each figure says which population it comes from.
- **Unlabelled**: the accuracy the model's own confidences predict (calibrated at build time on a held-out split,
  :class:`ferry.runtime.stats.Calibration`), and drift of the top-label confidence, the token length and the
  predicted-label mix against the manifest's reference sample.
- **Operations**: latency p50/p95/p99 weighted per request (a capture's latency is its request's, copied on each
  input) and the API's error counts (captures exist only for answers; errors come from the error metrics).

**Tests, and why they stay honest on a schedule.** The monitor runs every few minutes; testing the latest window
each time would test overlapping data again and again, and false alarms would pile up (../shared/DRIFT.md). So
each test consumes the stream in non-overlapping windows: the next ``accuracy_window`` labels (the exact binomial
test of :func:`ferry.runtime.stats.accuracy_drop_test`) and the next ``drift_window`` captures (the drift tests of
:func:`ferry.runtime.stats.drift_tests`, whose thresholds come from the spread between chunks of the reference),
each window tested exactly once, with cursors kept in the state table. A window ends on a millisecond boundary
(a request's captures share their time), and only what is older than ``settle_seconds`` is read (captures arrive
asynchronously). False alarms a month per model = alpha x windows a month (see ferry.runtime.stats).

**Episodes.** When a test fires and no episode is open, one ``ModelDegraded`` event goes to EventBridge with the
evidence (test, statistic, threshold, window, counts); while the episode is open further firings are recorded,
not sent. An episode closes after ``quiet_windows`` tested windows without a firing, or when a new version goes
live. State lives in DynamoDB, written with a conditional update on its revision: two runs at once cannot both
open an episode.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np

from ferry.metrics import classification_metrics
from ferry.runtime import stats
from ferry.runtime.aws import batch_get, plain
from ferry.runtime.capture import SECONDS_PER_DAY
from ferry.runtime.constants import METRICS_NAMESPACE, TEXT_CLASSIFICATION
from ferry.runtime.manifest import Manifest, ReferenceSample

CAPTURE_INDEX = "by-model-time"  # the capture and feedback tables' index: model_version + epoch_ms
STATE_KEY = "state"  # the state table's sort key of a model's cursors and episode
RUN_PREFIX = "run#"  # ... and of each run's figures (run#<epoch ms, 13 digits>)
EVENT_SOURCE = "ferry.monitor"
DEGRADED = "ModelDegraded"
RECOVERED = "ModelRecovered"
SERVICE = "ferry-monitor"
CONFIDENCE = "confidence"  # the capture field of the top label's probability (older captures: "score")


@dataclass(frozen=True)
class MonitorConfig:
    """How the monitor reads and tests. Windows are counts (labels, captures); the rest are seconds or minutes."""

    window_minutes: int = 60  # the figures shown (accuracy, latency, estimated accuracy) cover this much time
    accuracy_window: int = stats.ACCURACY_WINDOW  # labels per accuracy test
    drift_window: int = stats.DRIFT_WINDOW  # captures per drift test
    min_sampled: int = 100  # a label window with this many audit-sample labels is tested on those alone
    quiet_windows: int = 3  # an episode closes after this many tested windows without a firing
    settle_seconds: float = 60.0  # only captures and labels older than this are read (delivery is asynchronous)
    join_timeout_seconds: float = 3600.0  # a label whose capture is still missing after this is set aside
    accuracy_alpha: float = stats.ACCURACY_ALPHA
    drift_alpha: float = stats.DRIFT_ALPHA
    history_days: int = 90  # each run's figures are kept this long (ferry report)

    def __post_init__(self) -> None:
        for name in ("window_minutes", "accuracy_window", "drift_window", "quiet_windows", "history_days"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.settle_seconds < 0 or self.join_timeout_seconds < 0:
            raise ValueError("settle_seconds and join_timeout_seconds must not be negative")


@dataclass
class Sources:
    """What the monitor reads and writes: boto3 DynamoDB tables (resources), an EventBridge client and bus, a
    CloudWatch client for the error counts (None: not read), and the metrics namespace."""

    captures: Any
    state: Any
    feedback: Any | None = None
    events: Any | None = None
    bus: str | None = None
    cloudwatch: Any | None = None
    namespace: str = METRICS_NAMESPACE
    error_services: tuple[str, ...] = ("ferry-predict",)


# -- reading ---------------------------------------------------------------------------------------------------

def query_range(table: Any, model_version: str, after_ms: int, until_ms: int) -> list[dict[str, Any]]:
    """Every item of `model_version` with after_ms < epoch_ms <= until_ms, by time (then id), all pages."""
    from boto3.dynamodb.conditions import Key

    if until_ms <= after_ms:
        return []
    condition = Key("model_version").eq(model_version) & Key("epoch_ms").between(after_ms + 1, until_ms)
    items: list[dict[str, Any]] = []
    arguments: dict[str, Any] = {"IndexName": CAPTURE_INDEX, "KeyConditionExpression": condition}
    while True:
        page = table.query(**arguments)
        items.extend(plain(item) for item in page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            break
        arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return sorted(items, key=lambda item: (int(item["epoch_ms"]), str(item["prediction_id"])))


def fetch(table: Any, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The items of `ids` that exist (prediction_id, label, epoch_ms), by id; keys DynamoDB would not serve after
    its retries are an error (the run fails and the next one reads them)."""
    unique = list(dict.fromkeys(ids))
    items, left = batch_get(table.meta.client, table.name, [{"prediction_id": value} for value in unique],
                            projection="prediction_id, #l, epoch_ms", names={"#l": "label"}, attempts=6)
    if left:
        raise RuntimeError(f"{table.name}: DynamoDB left {left} keys unprocessed")
    return {str(item["prediction_id"]): plain(item) for item in items}


def complete_windows(items: Sequence[Mapping[str, Any]], size: int) -> list[list[Mapping[str, Any]]]:
    """The stream cut into consecutive windows of at least `size` items, each ending on a change of epoch_ms
    (the items of one request share their time, and a window never splits them); the rest waits for more."""
    windows: list[list[Mapping[str, Any]]] = []
    start = 0
    while start + size <= len(items):
        end = start + size
        while end < len(items) and items[end]["epoch_ms"] == items[end - 1]["epoch_ms"]:
            end += 1
        windows.append(list(items[start:end]))
        start = end
    return windows


def confidence_of(capture: Mapping[str, Any]) -> float | None:
    """The top label's probability under the model's default function (captures before it existed: the score,
    which was that probability unless the client asked otherwise)."""
    value = capture.get(CONFIDENCE, capture.get("score"))
    return None if value is None else float(value)


# -- figures ---------------------------------------------------------------------------------------------------

def weighted_percentiles(values: Sequence[float], weights: Sequence[float],
                         quantiles: Sequence[float]) -> list[float | None]:
    """Percentiles of values weighted (a capture weighs 1/batch size: each request counts once)."""
    if not values:
        return [None for _ in quantiles]
    order = np.argsort(values)
    ordered = np.asarray(values, dtype=float)[order]
    cumulative = np.cumsum(np.asarray(weights, dtype=float)[order])
    total = cumulative[-1]
    return [round(float(ordered[min(int(np.searchsorted(cumulative, q * total)), len(ordered) - 1)]), 3)
            for q in quantiles]


def latency_figures(captures: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """p50/p95/p99 of the API's request latency (ms) and the number of requests, from the captures."""
    api = [c for c in captures if c.get("channel", "api") == "api" and c.get("latency_ms") is not None]
    weights = [1.0 / max(1, int(c.get("batch_size") or 1)) for c in api]
    p50, p95, p99 = weighted_percentiles([float(c["latency_ms"]) for c in api], weights, (0.5, 0.95, 0.99))
    return {"requests": round(sum(weights)), "p50_ms": p50, "p95_ms": p95, "p99_ms": p99}


def _interval(pair: tuple[float, float]) -> list[float]:
    return [round(pair[0], 4), round(pair[1], 4)]


def labelled_figures(pairs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]], labels: Sequence[str],
                     population: str) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class recall of (feedback, capture) pairs, each with its count and a 95%
    interval; ``population`` says whose labels they are."""
    index = {label: position for position, label in enumerate(labels)}
    known = [(f, c) for f, c in pairs if f.get("label") in index and c.get("label") in index]
    if not known:
        return {"population": population, "labels": 0}
    truth = [index[f["label"]] for f, _ in known]
    predicted = [index[c["label"]] for _, c in known]
    metrics = classification_metrics(truth, predicted, labels)
    correct = sum(t == p for t, p in zip(truth, predicted, strict=True))

    def macro_f1(t: np.ndarray, p: np.ndarray) -> float:
        return classification_metrics(t.tolist(), p.tolist(), labels).macro_f1

    recall = {}
    for position, (label, figures) in enumerate(metrics.per_class.items()):
        hits = metrics.matrix[position][position]  # rows are true classes
        recall[label] = {"recall": round(figures.recall, 4), "labels": figures.support,
                         "interval": _interval(stats.wilson_interval(hits, figures.support))}
    return {
        "population": population,
        "labels": len(known),
        "accuracy": round(correct / len(known), 4),
        "accuracy_interval": _interval(stats.wilson_interval(correct, len(known))),
        "macro_f1": round(metrics.macro_f1, 4),
        "macro_f1_interval": _interval(stats.bootstrap_interval(macro_f1, np.asarray(truth), np.asarray(predicted),
                                                                draws=200)),
        "recall": recall,
    }


def window_rows(captures: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> stats.WindowRows:
    index = {label: position for position, label in enumerate(labels)}
    usable = [c for c in captures if confidence_of(c) is not None and c.get("label") in index]
    return stats.WindowRows(
        confidence=np.asarray([confidence_of(c) for c in usable], dtype=float),
        predicted=np.asarray([index[c["label"]] for c in usable], dtype=int),
        token_length=np.asarray([int(c.get("token_length") or 0) for c in usable], dtype=int),
    )


def reference_of(manifest: Manifest) -> stats.ReferenceSample | None:
    """The manifest's reference sample as the statistics take it; None when the build recorded none."""
    sample: ReferenceSample | None = manifest.reference.sample if manifest.reference else None
    if sample is None:
        return None
    return stats.ReferenceSample(
        confidence=np.asarray(sample.confidence, dtype=float),
        predicted=np.asarray(sample.predicted, dtype=int),
        token_length=np.asarray(sample.token_length, dtype=int),
        correct=None if sample.correct is None else np.asarray(sample.correct, dtype=int),
        labels=tuple(manifest.labels),
    )


def reference_accuracy(manifest: Manifest) -> tuple[float, int] | None:
    """The accuracy live labels are tested against and the number of texts it was measured on: the reference
    sample's (a held-out split), else the parity gate's int8 accuracy."""
    sample = manifest.reference.sample if manifest.reference else None
    if sample is not None and sample.accuracy is not None:
        return sample.accuracy, sample.n
    parity = manifest.parity
    if parity is not None and parity.accuracy_int8 is not None:
        return parity.accuracy_int8, parity.texts
    return None


NORM_PSI = "norm_psi"  # an embedder's test: PSI of the vectors' norms


@functools.lru_cache(maxsize=64)
def _norm_bins(model: str, version: str, window: int, alpha: float, norms: bytes
               ) -> tuple[tuple[float, ...], tuple[int, ...], float]:
    reference = np.frombuffer(norms, dtype=float)
    edges = stats.quantile_edges(reference)
    threshold = stats.null_threshold(reference, window, stats.psi_statistic(), alpha)
    return edges, tuple(int(count) for count in stats.open_bin_counts(reference, edges)), threshold


def _norm_reference(model: str, version: str, norms: np.ndarray, window: int,
                    alpha: float) -> tuple[tuple[float, ...], np.ndarray, float]:
    """The reference norms' bins and the PSI threshold of a window of `window` rows: computed once per model
    version in a warm container."""
    edges, counts, threshold = _norm_bins(model, version, window, alpha, norms.tobytes())
    return edges, np.asarray(counts), threshold


_NO_REFERENCE = "no reference sample in the manifest (built before the monitor): no drift tests"


def _small_reference(rows: int) -> str:
    return (f"the reference sample has {rows} rows, under the {stats.MIN_REFERENCE_ROWS} a drift threshold needs: "
            "no drift tests (build with --reference-data, a held-out split)")


# -- the run ---------------------------------------------------------------------------------------------------

@dataclass
class Firing:
    """A test that fired, with its evidence."""

    test: str
    statistic: float
    threshold: float
    window: dict[str, Any]
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"test": self.test, "statistic": self.statistic, "threshold": self.threshold, "window": self.window,
                **self.detail}


@dataclass
class ModelHealth:
    """One model's figures and verdicts for one run (what `ferry monitor` prints and the run item keeps)."""

    model: str
    version: str
    task: str
    time_ms: int
    predictions: int = 0
    labelled: dict[str, Any] = field(default_factory=dict)
    estimated: dict[str, Any] = field(default_factory=dict)
    drift: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    tests: list[dict[str, Any]] = field(default_factory=list)  # every window tested this run
    firings: list[Firing] = field(default_factory=list)
    episode: dict[str, Any] | None = None
    event_sent: str | None = None  # DEGRADED or RECOVERED when this run sent one
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.episode is not None:
            return "degraded"
        if self.predictions == 0:
            return "idle"
        return "healthy"

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "task": self.task, "time_ms": self.time_ms,
                "status": self.status, "predictions": self.predictions, "labelled": self.labelled,
                "estimated": self.estimated, "drift": self.drift, "latency": self.latency, "errors": self.errors,
                "tests": self.tests, "firings": [f.to_dict() for f in self.firings], "episode": self.episode,
                "event_sent": self.event_sent, "notes": self.notes}


class Monitor:
    """One run over every model in `manifests` (name -> live manifest)."""

    def __init__(self, manifests: Mapping[str, Manifest], sources: Sources, config: MonitorConfig | None = None,
                 *, clock: Any = time.time):
        self.manifests = manifests
        self.sources = sources
        self.config = config or MonitorConfig()
        self.clock = clock

    def run(self) -> list[ModelHealth]:
        now_ms = int(self.clock() * 1000)
        errors = self._errors(now_ms)
        results = []
        for name in sorted(self.manifests):
            health = self.run_model(self.manifests[name], now_ms)
            health.errors = errors
            results.append(health)
        return results

    # -- one model -------------------------------------------------------------------------------------------

    def run_model(self, manifest: Manifest, now_ms: int) -> ModelHealth:
        config = self.config
        health = ModelHealth(manifest.name, manifest.version, manifest.task, now_ms)
        state = self._state(manifest.name)
        if state.get("version") != manifest.version:
            outbox = list(state.get("outbox") or [])
            if state.get("episode"):
                health.notes.append(f"episode closed: version {manifest.version} went live")
                outbox.append(self._event(RECOVERED, manifest.name, str(state.get("version")),
                                          {"reason": f"version {manifest.version} went live",
                                           "episode": state["episode"]["id"]}))
            state = {"model": manifest.name, "sk": STATE_KEY, "version": manifest.version, "rows_cursor": 0,
                     "labels_cursor": 0, "episode": None, "quiet": 0, "outbox": outbox,
                     "revision": state.get("revision", 0)}
        model_version = f"{manifest.name}#{manifest.version}"
        settled = now_ms - int(config.settle_seconds * 1000)
        window_start = now_ms - config.window_minutes * 60_000
        oldest = min(int(state["rows_cursor"]), window_start)
        captures = query_range(self.sources.captures, model_version, oldest, now_ms)
        recent = [c for c in captures if int(c["epoch_ms"]) > window_start]
        health.predictions = len(recent)
        health.latency = latency_figures(recent)
        if not captures and not state.get("episode"):
            health.notes.append("no captures")
        # the tests read only what has settled: a window must not close before all its captures have landed
        fresh = [c for c in captures if int(state["rows_cursor"]) < int(c["epoch_ms"]) <= settled]
        reference = reference_of(manifest)
        if manifest.task == TEXT_CLASSIFICATION:
            self._unlabelled(manifest, reference, recent, fresh, state, health)
            self._labelled(manifest, recent, state, health, now_ms, settled, window_start)
        elif fresh:
            self._embedding_drift(manifest, reference, fresh, state, health)
        self._episode(manifest, state, health, now_ms)
        if self._save(state, health, now_ms):
            self._deliver(state, health, now_ms)
        return health

    def _unlabelled(self, manifest: Manifest, reference: stats.ReferenceSample | None,
                    recent: Sequence[Mapping[str, Any]], fresh: Sequence[Mapping[str, Any]], state: dict[str, Any],
                    health: ModelHealth) -> None:
        labels = manifest.labels
        rows = window_rows(recent, labels)
        if len(rows.predicted):
            shares = np.bincount(rows.predicted, minlength=len(labels)) / len(rows.predicted)
            health.drift["label_share"] = {label: round(float(share), 4) for label, share in zip(labels, shares,
                                                                                                  strict=True)}
        calibration = manifest.reference.calibration if manifest.reference else None
        if calibration is not None and len(rows.confidence):
            probabilities = stats.Calibration.from_dict(calibration).apply(rows.confidence)
            estimate = float(probabilities.mean())
            spread = math.sqrt(float((probabilities * (1 - probabilities)).sum())) / len(probabilities)
            health.estimated = {"accuracy": round(estimate, 4), "rows": len(probabilities),
                                "interval": [round(estimate - 1.96 * spread, 4), round(estimate + 1.96 * spread, 4)]}
        if reference is None or reference.rows < stats.MIN_REFERENCE_ROWS:
            health.notes.append(_NO_REFERENCE if reference is None else _small_reference(reference.rows))
            return
        fitted = stats.Calibration.from_dict(calibration) if calibration is not None else None
        for window in complete_windows(fresh, self.config.drift_window):
            # exactly drift_window rows are tested (the null thresholds are per window size, computed once); the
            # few more a window may hold to end on a request's boundary are consumed untested
            rows = window_rows(window[:self.config.drift_window], labels)
            if rows.rows >= stats.MIN_DRIFT_ROWS:
                for test in stats.drift_tests(reference, rows, self.config.drift_alpha, calibration=fitted):
                    self._record(health, test.name, test.statistic, test.threshold, test.fired, window,
                                 {"alpha": test.alpha,
                                  "direction": "below" if test.name == "estimated_accuracy" else "above"})
                    health.drift[test.name] = round(test.statistic, 4)
            else:
                health.notes.append(f"a window of {len(window)} captures had {rows.rows} with a confidence: untested")
            state["rows_cursor"] = int(window[-1]["epoch_ms"])

    def _embedding_drift(self, manifest: Manifest, reference: stats.ReferenceSample | None,
                         fresh: Sequence[Mapping[str, Any]], state: dict[str, Any], health: ModelHealth) -> None:
        """An embedder has no labels and no confidence: drift of its inputs' token lengths and of its vectors'
        norms (before normalizing), each window against the reference sample's."""
        if reference is None or reference.rows < stats.MIN_REFERENCE_ROWS:
            health.notes.append(_NO_REFERENCE if reference is None else _small_reference(reference.rows))
            return
        sample = manifest.reference.sample if manifest.reference else None
        norms = np.asarray(sample.norm if sample else (), dtype=float)
        size = self.config.drift_window
        for window in complete_windows(fresh, size):
            tested = window[:size]
            lengths = [int(c.get("token_length") or 0) for c in tested]
            rows = stats.WindowRows(confidence=np.zeros(0), predicted=np.zeros(0, dtype=int),
                                    token_length=np.asarray(lengths))
            for test in stats.drift_tests(reference, rows, self.config.drift_alpha):
                self._record(health, test.name, test.statistic, test.threshold, test.fired, window,
                             {"alpha": test.alpha, "direction": "above"})
                health.drift[test.name] = round(test.statistic, 4)
            live = np.asarray([float(c["norm"]) for c in tested if c.get("norm") is not None])
            if norms.size >= stats.MIN_REFERENCE_ROWS and live.size >= stats.MIN_DRIFT_ROWS:
                edges, counts, threshold = _norm_reference(manifest.name, manifest.version, norms, live.size,
                                                           self.config.drift_alpha)
                value = stats.psi(counts, stats.open_bin_counts(live, edges))
                self._record(health, NORM_PSI, value, threshold, value > threshold, window,
                             {"alpha": self.config.drift_alpha, "direction": "above"})
                health.drift[NORM_PSI] = round(value, 4)
            state["rows_cursor"] = int(window[-1]["epoch_ms"])

    def _labelled(self, manifest: Manifest, recent: Sequence[Mapping[str, Any]], state: dict[str, Any],
                  health: ModelHealth, now_ms: int, settled: int, window_start: int) -> None:
        if self.sources.feedback is None:
            return
        model_version = f"{manifest.name}#{manifest.version}"
        oldest = min(int(state["labels_cursor"]), window_start)
        feedback = query_range(self.sources.feedback, model_version, oldest, now_ms)
        joined, pending, orphans = self._join(feedback, now_ms)
        shown = [(f, c) for f, c in joined if int(f["epoch_ms"]) > window_start]
        sampled = [(f, c) for f, c in shown if f.get("sampled")]
        if not shown:
            health.labelled = {"labels": 0, "pending": pending,
                               "note": "no labels in the window: labelled figures and the accuracy test wait for "
                                       "feedback"}
        else:
            health.labelled = labelled_figures(shown, manifest.labels, "all feedback")
            if sampled:
                health.labelled["sampled"] = labelled_figures(sampled, manifest.labels, "audit sample")
            health.labelled["pending"] = pending
            health.labelled["label_share"] = round(len(shown) / max(1, health.predictions), 4)
        if orphans:
            health.notes.append(f"{orphans} labels whose capture never arrived were set aside")
        accuracy = reference_accuracy(manifest)
        fresh = [(f, c) for f, c in joined if int(state["labels_cursor"]) < int(f["epoch_ms"]) <= settled]
        if accuracy is None:
            if fresh:
                health.notes.append("no reference accuracy in the manifest (unlabelled evaluation): no accuracy test")
            return
        items = [{"epoch_ms": f["epoch_ms"], "pair": (f, c)} for f, c in fresh]
        for window in complete_windows(items, self.config.accuracy_window):
            pairs = [item["pair"] for item in window]
            audit = [(f, c) for f, c in pairs if f.get("sampled")]
            population, used = ("audit sample", audit) if len(audit) >= self.config.min_sampled else (
                "all feedback", pairs)
            correct = sum(f.get("label") == c.get("label") for f, c in used)
            test = stats.accuracy_drop_test(correct, len(used), accuracy[0], accuracy[1], self.config.accuracy_alpha)
            self._record(health, "accuracy", test.accuracy, test.tested_against, test.fired, window,
                         {"labels": test.n, "correct": test.correct, "p_value": test.p_value, "alpha": test.alpha,
                          "reference_accuracy": test.reference_accuracy, "margin": test.margin,
                          "population": population, "direction": "below"})
            state["labels_cursor"] = int(window[-1]["epoch_ms"])

    def _join(self, feedback: Sequence[Mapping[str, Any]], now_ms: int
              ) -> tuple[list[tuple[Mapping[str, Any], Mapping[str, Any]]], int, int]:
        """Each label with its capture, in order, up to the first label whose capture has not landed yet (later
        ones wait with it, so a window never skips a label); labels waiting longer than the join timeout are set
        aside. Returns (joined, pending, set aside)."""
        joined: list[tuple[Mapping[str, Any], Mapping[str, Any]]] = []
        orphans = 0
        captures = fetch(self.sources.captures, [str(item["prediction_id"]) for item in feedback])
        for position, item in enumerate(feedback):
            capture = captures.get(str(item["prediction_id"]))
            if capture is not None:
                joined.append((item, capture))
            elif now_ms - int(item["epoch_ms"]) > self.config.join_timeout_seconds * 1000:
                orphans += 1
            else:
                return joined, len(feedback) - position, orphans
        return joined, 0, orphans

    def _record(self, health: ModelHealth, name: str, value: float, threshold: float, fired: bool,
                window: Sequence[Mapping[str, Any]], detail: dict[str, Any]) -> None:
        span = {"from_ms": int(window[0]["epoch_ms"]), "to_ms": int(window[-1]["epoch_ms"]), "rows": len(window)}
        entry = {"test": name, "statistic": round(float(value), 6), "threshold": round(float(threshold), 6),
                 "fired": bool(fired), "window": span, **_json_safe(detail)}
        health.tests.append(entry)
        if fired:
            health.firings.append(Firing(name, entry["statistic"], entry["threshold"], span, _json_safe(detail)))

    # -- episodes, events, state ------------------------------------------------------------------------------

    def _episode(self, manifest: Manifest, state: dict[str, Any], health: ModelHealth, now_ms: int) -> None:
        episode = state.get("episode")
        opened_now = False
        if health.firings:
            if not episode:
                opened_now = True
                episode = {"id": f"{manifest.name}-{manifest.version}-{now_ms}", "opened_ms": now_ms,
                           "version": manifest.version, "firings": 0, "tests": []}
                # since_ms: where the traffic that fired began (the earliest window's start): an update counts
                # and gates on the feedback from there (ferry.update)
                state.setdefault("outbox", []).append(self._event(DEGRADED, manifest.name, manifest.version, {
                    "episode": episode["id"], "opened_ms": now_ms,
                    "since_ms": min(int(f.window["from_ms"]) for f in health.firings) - 1,
                    "evidence": [f.to_dict() for f in health.firings]}))
            state["quiet"] = 0  # counted again below, from the windows after the last firing of this run
            episode["firings"] = int(episode["firings"]) + len(health.firings)
            episode["tests"] = sorted(set(episode["tests"]) | {f.test for f in health.firings})
            episode["last_firing_ms"] = now_ms
        if episode and health.tests and not opened_now:
            state["quiet"] = int(state.get("quiet", 0)) + quiet_windows(health.tests)
            if state["quiet"] >= self.config.quiet_windows:
                state.setdefault("outbox", []).append(self._event(RECOVERED, manifest.name, manifest.version, {
                    "episode": episode["id"], "quiet_windows": state["quiet"]}))
                health.notes.append(f"episode {episode['id']} closed after {state['quiet']} quiet windows")
                episode = None
        state["episode"] = episode
        health.episode = episode

    @staticmethod
    def _event(detail_type: str, model: str, version: str, detail: dict[str, Any]) -> dict[str, Any]:
        return {"type": detail_type, "detail": {"model": model, "version": version, **_json_safe(detail)}}

    def _deliver(self, state: dict[str, Any], health: ModelHealth, now_ms: int) -> None:
        """Send the events of the state's outbox, then save the state without those sent.

        An event goes out only after the state that decided it was saved (on its revision condition): of two runs
        at once, only the one whose save won sends, so an episode is announced once. An event EventBridge refuses
        stays in the outbox, and the next run sends it again."""
        outbox = list(state.get("outbox") or [])
        if not outbox or self.sources.events is None:
            return
        left = []
        for event in outbox:
            try:
                self._send(event)
            except Exception as error:  # kept for the next run, which tries again
                left.append(event)
                health.notes.append(f"{event['type']} not sent yet ({error.__class__.__name__}: {error})")
            else:
                health.event_sent = event["type"]
        state["outbox"] = left
        self._save(state, None, now_ms)

    def _send(self, event: Mapping[str, Any]) -> None:
        entry: dict[str, Any] = {"Source": EVENT_SOURCE, "DetailType": event["type"],
                                 "Detail": json.dumps(event["detail"]), "Resources": []}
        if self.sources.bus:
            entry["EventBusName"] = self.sources.bus
        events = self.sources.events
        assert events is not None, "_deliver sends only with an EventBridge client"
        answer = events.put_events(Entries=[entry])
        if answer.get("FailedEntryCount"):
            raise RuntimeError(f"EventBridge refused it: {answer.get('Entries')}")

    def _state(self, model: str) -> dict[str, Any]:
        item = self.sources.state.get_item(Key={"model": model, "sk": STATE_KEY}, ConsistentRead=True).get("Item")
        return plain(item) if item else {"model": model, "sk": STATE_KEY, "revision": 0}

    def _save(self, state: dict[str, Any], health: ModelHealth | None, now_ms: int) -> bool:
        """The cursors, the episode and the outbox, on the condition that no other run saved since this one read
        them (False, and nothing kept, when one did); then, with `health`, this run's figures as an item of their
        own (kept history_days)."""
        from botocore.exceptions import ClientError

        revision = int(state.get("revision", 0))
        item = {**state, "revision": revision + 1, "updated_ms": now_ms}
        try:
            self.sources.state.put_item(
                Item=_dynamo(item),
                ConditionExpression="attribute_not_exists(revision) OR revision = :seen",
                ExpressionAttributeValues={":seen": revision})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                if health is not None:
                    health.notes.append("another run saved first; this run's cursors, episode and events were "
                                        "not kept")
                return False
            raise
        state["revision"] = revision + 1
        if health is None:
            return True
        run = {"model": health.model, "sk": f"{RUN_PREFIX}{now_ms:013d}", "version": health.version,
               "figures": json.dumps(health.to_dict()),
               "expires_at": now_ms // 1000 + self.config.history_days * SECONDS_PER_DAY}
        self.sources.state.put_item(Item=run)
        return True

    def _errors(self, now_ms: int) -> dict[str, int]:
        """The API's errors by code over the window, from the error metrics (Powertools' ``Errors`` by service and
        code); {} without a CloudWatch client."""
        cloudwatch = self.sources.cloudwatch
        if cloudwatch is None:
            return {}
        from datetime import UTC, datetime, timedelta

        end = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
        start = end - timedelta(minutes=self.config.window_minutes)
        counts: dict[str, int] = {}
        for metric in cloudwatch.list_metrics(Namespace=self.sources.namespace, MetricName="Errors").get("Metrics", []):
            dimensions = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
            if dimensions.get("service") not in self.sources.error_services:
                continue
            points = cloudwatch.get_metric_statistics(
                Namespace=self.sources.namespace, MetricName="Errors", Dimensions=metric["Dimensions"],
                StartTime=start, EndTime=end, Period=max(60, self.config.window_minutes * 60), Statistics=["Sum"])
            total = int(sum(point.get("Sum", 0) for point in points.get("Datapoints", [])))
            if total:
                code = dimensions.get("code", "unknown")
                counts[code] = counts.get(code, 0) + total
        return counts


def quiet_windows(tests: Sequence[Mapping[str, Any]]) -> int:
    """How many windows tested this run came after the last one in which a test fired (a window: the tests of one
    stream, accuracy or drift, over the same rows)."""
    windows: dict[tuple[str, int], bool] = {}
    for test in tests:
        key = ("labels" if test["test"] == "accuracy" else "rows", int(test["window"]["from_ms"]))
        windows[key] = windows.get(key, False) or bool(test["fired"])
    ordered = sorted(windows.items(), key=lambda item: item[0][1])
    last_fired = max((position for position, (_, fired) in enumerate(ordered) if fired), default=-1)
    return len(ordered) - 1 - last_fired


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _dynamo(value: Any) -> Any:
    """Plain Python as DynamoDB takes it: floats as Decimal, recursively."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return Decimal(str(round(value, 9)))
    if isinstance(value, dict):
        return {key: _dynamo(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_dynamo(item) for item in value]
    return value


# -- what a run publishes ----------------------------------------------------------------------------------------

METRICS = {  # metric name -> (unit, where in ModelHealth.to_dict())
    "MonitoredPredictions": ("Count", ("predictions",)),
    "Accuracy": ("None", ("labelled", "accuracy")),
    "MacroF1": ("None", ("labelled", "macro_f1")),
    "Labels": ("Count", ("labelled", "labels")),
    "LabelShare": ("None", ("labelled", "label_share")),
    "EstimatedAccuracy": ("None", ("estimated", "accuracy")),
    "ConfidencePSI": ("None", ("drift", "confidence_psi")),
    "TokenLengthPSI": ("None", ("drift", "token_length_psi")),
    "LabelMixJS": ("None", ("drift", "label_mix_js")),
    "NormPSI": ("None", ("drift", "norm_psi")),
    "LatencyP50": ("Milliseconds", ("latency", "p50_ms")),
    "LatencyP95": ("Milliseconds", ("latency", "p95_ms")),
    "LatencyP99": ("Milliseconds", ("latency", "p99_ms")),
}
TEST_METRICS = {"accuracy": "AccuracyDropDetected", "confidence_psi": "DriftDetected",
                "token_length_psi": "DriftDetected", "label_mix_js": "DriftDetected",
                "estimated_accuracy": "EstimatedAccuracyDropDetected", NORM_PSI: "DriftDetected"}


def emf_documents(results: Iterable[ModelHealth], namespace: str = METRICS_NAMESPACE) -> Iterator[dict[str, Any]]:
    """One EMF document per model: its figures by model and version and by model alone (template alarms cannot
    name a version), each test's firings (0 or more: alarms fire on > 0), and Degraded (1 while an episode is
    open)."""
    for health in results:
        figures = health.to_dict()
        values: dict[str, Any] = {}
        units: dict[str, str] = {}
        for name, (unit, path) in METRICS.items():
            value: Any = figures
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if isinstance(value, int | float) and not isinstance(value, bool):
                values[name], units[name] = value, unit
        for test_metric in set(TEST_METRICS.values()):
            values[test_metric], units[test_metric] = 0, "Count"
        for firing in health.firings:
            values[TEST_METRICS.get(firing.test, "DriftDetected")] += 1
        values["Degraded"], units["Degraded"] = (1 if health.episode else 0), "Count"
        yield {
            "_aws": {"Timestamp": health.time_ms, "CloudWatchMetrics": [{
                "Namespace": namespace, "Dimensions": [["model", "version"], ["model"]],
                "Metrics": [{"Name": name, "Unit": units[name]} for name in values]}]},
            "model": health.model, "version": health.version, "service": SERVICE, **values,
        }


def history(state_table: Any, model: str, since_ms: int = 0) -> list[dict[str, Any]]:
    """The figures of each run for `model` since `since_ms`, oldest first (what `ferry report` draws)."""
    from boto3.dynamodb.conditions import Key

    condition = Key("model").eq(model) & Key("sk").between(f"{RUN_PREFIX}{since_ms:013d}", f"{RUN_PREFIX}9")
    runs: list[dict[str, Any]] = []
    arguments: dict[str, Any] = {"KeyConditionExpression": condition}
    while True:
        page = state_table.query(**arguments)
        runs.extend(json.loads(item["figures"]) for item in page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return runs
        arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def last_run(state_table: Any, model: str) -> dict[str, Any] | None:
    """The figures of the latest run for `model` (one item read, newest first), or None."""
    from boto3.dynamodb.conditions import Key

    page = state_table.query(KeyConditionExpression=Key("model").eq(model) & Key("sk").begins_with(RUN_PREFIX),
                             ScanIndexForward=False, Limit=1)
    items = page.get("Items", [])
    return json.loads(items[0]["figures"]) if items else None


def current_state(state_table: Any, model: str) -> dict[str, Any] | None:
    item = state_table.get_item(Key={"model": model, "sk": STATE_KEY}).get("Item")
    return plain(item) if item else None
