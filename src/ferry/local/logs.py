"""CloudWatch Logs, locally: each function's stdout as its log group, subscription filters and EMF metrics.

In AWS, what a function prints becomes log events of its log group; a subscription filter forwards the
events its pattern matches to another function, and lines in the embedded metric format (EMF) become
CloudWatch metrics. The local stack does the same: :class:`LogRouter` stands in for ``sys.stdout`` and
files every line a function writes under that function's log group (still echoing it, as ``sam local``
does); :class:`LogDelivery` then applies the template's subscription filters and turns EMF lines into
``PutMetricData`` calls on the embedded CloudWatch.
"""

from __future__ import annotations

import fnmatch
import logging
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from ferry.runtime.capture import json_object

log = logging.getLogger("ferry.local")

LogLine = tuple[str, int, str]  # (log group, epoch ms, message)


class LogRouter:
    """A ``sys.stdout`` that knows which function is writing: a thread's lines go to its function's log group.

    Install it with :meth:`install` before the functions are imported (Powertools' Logger keeps the stream it
    finds at import) and again before each invocation (a test runner may have swapped ``sys.stdout`` since);
    lines written outside an invocation only pass through.
    """

    def __init__(self, sink: Callable[[LogLine], None]):
        self.sink = sink
        self.stream: TextIO = sys.stdout
        self._local = threading.local()

    def install(self) -> None:
        current = sys.stdout
        if current is not self:
            self.stream = current
            sys.stdout = self  # type: ignore[assignment]

    def uninstall(self) -> None:
        if sys.stdout is self:
            sys.stdout = self.stream

    @contextmanager
    def group(self, name: str) -> Iterator[None]:
        """Lines this thread writes inside the block belong to log group `name`."""
        self.install()
        previous = getattr(self._local, "group", None), getattr(self._local, "pending", "")
        self._local.group, self._local.pending = name, ""
        try:
            yield
        finally:
            if self._local.pending:
                self._emit(name, self._local.pending)
            self._local.group, self._local.pending = previous

    def write(self, text: str) -> int:
        self.stream.write(text)
        group = getattr(self._local, "group", None)
        if group is not None:
            *lines, self._local.pending = (self._local.pending + text).split("\n")
            for line in lines:
                self._emit(group, line)
        return len(text)

    def _emit(self, group: str, line: str) -> None:
        if line.strip():
            self.sink((group, int(time.time() * 1000), line))

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, fileno...: the real stream's
        return getattr(self.stream, name)


# -- subscription filter patterns -------------------------------------------------------------------------------

_CONDITION = re.compile(r'^\$((?:\.[A-Za-z0-9_-]+)+)\s*(=|!=)\s*(?:"((?:[^"\\]|\\.)*)"|(-?\d+(?:\.\d+)?))$')


@dataclass(frozen=True)
class FilterPattern:
    """The JSON form of a CloudWatch Logs filter pattern, as far as Ferry's template uses it:
    ``{ $.a.b = "glob*" }`` or ``!=``, strings (``*`` matches anything) or numbers, joined by ``&&``."""

    text: str
    conditions: tuple[tuple[tuple[str, ...], str, str | float], ...]

    @classmethod
    def parse(cls, text: str) -> FilterPattern:
        body = text.strip()
        if not (body.startswith("{") and body.endswith("}")):
            raise ValueError(f"filter pattern {text!r}: the local stack understands JSON patterns {{ $.key = value }}")
        conditions = []
        for part in body[1:-1].split("&&"):
            match = _CONDITION.match(part.strip())
            if match is None:
                raise ValueError(f"filter pattern {text!r}: cannot read {part.strip()!r} (use $.key = \"value\")")
            path, operator, string, number = match.groups()
            value: str | float = float(number) if number is not None else string
            conditions.append((tuple(path[1:].split(".")), operator, value))
        return cls(text, tuple(conditions))

    def matches(self, message: str) -> bool:
        return self.holds(json_object(message))

    def holds(self, document: dict[str, Any] | None) -> bool:
        """Whether a line's JSON object (None: the line is not JSON) matches."""
        return document is not None and all(
            _holds(document, path, operator, value) for path, operator, value in self.conditions)


def _holds(document: dict[str, Any], path: tuple[str, ...], operator: str, expected: str | float) -> bool:
    value: Any = document
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return False
        value = value[key]
    if isinstance(expected, float):
        equal = isinstance(value, int | float) and not isinstance(value, bool) and float(value) == expected
    else:
        equal = isinstance(value, str | int | float) and fnmatch.fnmatchcase(str(value), expected)
    return equal if operator == "=" else not equal


# -- embedded metric format -------------------------------------------------------------------------------------

def emf_metric_data(message: str) -> list[tuple[str, dict[str, Any]]]:
    """(namespace, PutMetricData datum) for every metric of every dimension set of an EMF line; [] otherwise."""
    return _emf_metric_data(json_object(message))


def _emf_metric_data(document: dict[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
    metadata = document.get("_aws") if document else None
    if document is None or not isinstance(metadata, dict) or not isinstance(metadata.get("CloudWatchMetrics"), list):
        return []
    timestamp = datetime.fromtimestamp(int(metadata.get("Timestamp") or time.time() * 1000) / 1000, tz=UTC)
    data: list[tuple[str, dict[str, Any]]] = []
    for directive in metadata["CloudWatchMetrics"]:
        namespace = directive.get("Namespace")
        if not namespace:
            continue
        # CloudWatch drops a dimension set whose values are missing or not strings
        dimension_sets = [[{"Name": name, "Value": document[name]} for name in names]
                          for names in directive.get("Dimensions") or [[]]
                          if all(isinstance(document.get(name), str) for name in names)]
        for metric in directive.get("Metrics") or []:
            datum = _datum(metric, document.get(metric.get("Name")), timestamp)
            data.extend((namespace, {**datum, "Dimensions": dimensions}) for dimensions in dimension_sets if datum)
    return data


def _datum(metric: dict[str, Any], value: Any, timestamp: datetime) -> dict[str, Any] | None:
    """A PutMetricData datum (without dimensions) for one EMF metric's value or values; None if it has none."""
    values = [float(v) for v in (value if isinstance(value, list) else [value])
              if isinstance(v, int | float) and not isinstance(v, bool)]
    if not values:
        return None
    datum: dict[str, Any] = {"MetricName": metric["Name"], "Timestamp": timestamp, "Unit": metric.get("Unit") or "None"}
    if len(values) == 1:
        datum["Value"] = values[0]
    else:
        datum["Values"], datum["Counts"] = values, [1.0] * len(values)
    return datum


# -- delivery ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Subscription:
    """A subscription filter: lines of `group` that match `pattern` go to `destination`."""

    group: str
    pattern: FilterPattern
    destination: Callable[[str, list[tuple[int, str]]], None]  # (group, [(epoch ms, message)])


class LogDelivery:
    """Takes the routed lines off the request path: subscriptions get them in bursts, EMF goes to CloudWatch."""

    def __init__(self, subscriptions: list[Subscription], put_metric_data: Callable[..., Any] | None):
        self.subscriptions = subscriptions
        self.put_metric_data = put_metric_data
        self.lines: queue.Queue[LogLine] = queue.Queue()
        self.delivered = 0
        self.metrics_published = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-delivery", daemon=True)

    def start(self) -> LogDelivery:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def put(self, line: LogLine) -> None:
        self.lines.put(line)

    def _run(self) -> None:
        while not self._stop.is_set() or not self.lines.empty():
            try:
                burst = [self.lines.get(timeout=0.1)]
            except queue.Empty:
                continue
            time.sleep(0.05)  # let the rest of the request's lines arrive: one delivery per burst
            while not self.lines.empty() and len(burst) < 1000:
                burst.append(self.lines.get_nowait())
            self._deliver(burst)

    def _deliver(self, burst: list[LogLine]) -> None:
        documents = [json_object(message) for _, _, message in burst]  # each line parsed once
        for subscription in self.subscriptions:
            matched = [(stamp, message) for (group, stamp, message), document in zip(burst, documents, strict=True)
                       if group == subscription.group and subscription.pattern.holds(document)]
            if not matched:
                continue
            try:
                subscription.destination(subscription.group, matched)
                self.delivered += len(matched)
            except Exception:  # a delivery must never take the stack down; CloudWatch would retry
                log.exception("log subscription delivery to %s failed", subscription.group)
        if self.put_metric_data is None:
            return
        by_namespace: dict[str, list[dict[str, Any]]] = {}
        for document in documents:
            for namespace, datum in _emf_metric_data(document):
                by_namespace.setdefault(namespace, []).append(datum)
        for namespace, data in by_namespace.items():
            for start in range(0, len(data), 500):
                try:
                    self.put_metric_data(Namespace=namespace, MetricData=data[start:start + 500])
                    self.metrics_published += len(data[start:start + 500])
                except Exception:
                    log.exception("publishing EMF metrics to the embedded CloudWatch failed")
