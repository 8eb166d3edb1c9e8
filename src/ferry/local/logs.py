"""CloudWatch Logs, locally: each function's output as its log group, subscription filters and EMF metrics.

In AWS, what a function prints becomes log events of its log group; a subscription filter forwards the
events its pattern matches to another function, and lines in the embedded metric format (EMF) become
CloudWatch metrics. The local stack does the same: each function runs in a process of its own, and a
:class:`LogStream` reads its stdout and stderr and files every line under that function's log group (still
echoing it, as ``sam local`` does); :class:`LogDelivery` then applies the template's subscription filters
and turns EMF lines into ``PutMetricData`` calls on the embedded CloudWatch. A destination is invoked as
Lambda invokes asynchronously: an invocation that raises is retried twice, and then the event goes to the
function's dead-letter queue (or, without one, is dropped and counted as lost).
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from ferry.runtime.capture import encode_subscription_event, json_object

log = logging.getLogger("ferry.local")

LogLine = tuple[str, int, str]  # (log group, epoch ms, message)


class LogStream:
    """One output stream of a function's process (its stdout or its stderr), read line by line on a thread of its
    own: every line is a log event of the function's log group, as Lambda files both streams, C-level writes
    included (the stream is the process's file descriptor, not Python's ``sys.stdout``).

    A line that is exactly `marker` and a number is no log event: the process writes one after each invocation's
    output, so that :meth:`wait_flushed` can tell when everything the invocation wrote has been routed. The last
    lines are kept in `tail`, for the error that reports a process that failed to start.
    """

    def __init__(self, stream: IO[bytes], group: str, sink: Callable[[LogLine], None], marker: str,
                 echo: Callable[[str], None] | None = None, tail: deque[str] | None = None):
        self.stream = stream
        self.group = group
        self.sink = sink
        self.marker = marker
        self.echo = echo
        self.tail: deque[str] = tail if tail is not None else deque(maxlen=40)
        self._flushed = -1
        self._closed = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"log {group}", daemon=True)

    def start(self) -> LogStream:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for raw in self.stream:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if line.startswith(self.marker) and line[len(self.marker):].isdigit():
                    with self._changed:
                        self._flushed = int(line[len(self.marker):])
                        self._changed.notify_all()
                elif line.strip():
                    self._route(line)
        except (OSError, ValueError):  # the stream was closed under the thread: the process is gone
            pass
        finally:
            with self._changed:
                self._closed = True
                self._changed.notify_all()

    def _route(self, line: str) -> None:
        self.tail.append(line)
        self.sink((self.group, int(time.time() * 1000), line))
        if self.echo is not None:
            with contextlib.suppress(Exception):  # a closed terminal or pipe: the line is filed all the same
                self.echo(line)

    def wait_flushed(self, number: int, timeout: float) -> bool:
        """Whether every line written before flush marker `number` has been routed (or the stream has ended)
        within `timeout` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: self._flushed >= number or self._closed, timeout)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """Whether the stream is still being read (it ends when every process that can write to it has)."""
        return self._thread.is_alive()


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
    timestamp = _timestamp(metadata.get("Timestamp"))
    data: list[tuple[str, dict[str, Any]]] = []
    for directive in metadata["CloudWatchMetrics"]:
        namespace = directive.get("Namespace") if isinstance(directive, dict) else None
        if not namespace or not isinstance(namespace, str):
            continue
        # CloudWatch drops a dimension set whose values are missing or not strings
        dimension_sets = [[{"Name": name, "Value": document[name]} for name in names]
                          for names in _list(directive.get("Dimensions")) or [[]]
                          if isinstance(names, list) and all(isinstance(document.get(name), str) for name in names)]
        for metric in _list(directive.get("Metrics")):
            name = metric.get("Name") if isinstance(metric, dict) else None
            datum = _datum(metric, document.get(name), timestamp) if isinstance(name, str) else None
            data.extend((namespace, {**datum, "Dimensions": dimensions}) for dimensions in dimension_sets if datum)
    return data


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _timestamp(value: Any) -> datetime:
    """An EMF timestamp (epoch ms); now when it is missing or not a number."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        try:
            return datetime.fromtimestamp(value / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError):
            pass
    return datetime.now(tz=UTC)


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

Event = dict[str, Any]


@dataclass(frozen=True)
class Subscription:
    """A subscription filter: lines of `group` that match `pattern` go to `destination` as one subscription event
    (:func:`ferry.runtime.capture.encode_subscription_event`); an event the destination still fails after the
    retries goes to `dead_letter` with the last error, as Lambda sends it to the function's dead-letter queue."""

    group: str
    pattern: FilterPattern
    destination: Callable[[Event], Any]
    dead_letter: Callable[[Event, Exception], None] | None = None


ASYNC_RETRY_DELAYS = (0.2, 0.5)  # Lambda retries an async invocation twice (after about 1 and 2 minutes)


class LogDelivery:
    """Takes the routed lines off the request path: subscriptions get them in bursts, EMF goes to CloudWatch.

    Nothing a destination, a dead-letter queue or CloudWatch does stops the delivery thread: lines are counted as
    `delivered` (the destination took them), `dead_lettered` (in the dead-letter queue after the retries) or
    `lost` (no dead-letter queue, or it failed too), and later lines are still delivered."""

    def __init__(self, subscriptions: list[Subscription], put_metric_data: Callable[..., Any] | None,
                 retry_delays: Sequence[float] = ASYNC_RETRY_DELAYS):
        self.subscriptions = subscriptions
        self.put_metric_data = put_metric_data
        self.retry_delays = tuple(retry_delays)
        self.lines: queue.Queue[LogLine] = queue.Queue()
        self.delivered = 0
        self.dead_lettered = 0
        self.lost = 0
        self.metrics_published = 0
        self._stop = threading.Event()
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name="log-delivery", daemon=True)

    def start(self) -> LogDelivery:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        """Deliver what is queued (for at most `timeout` seconds; the thread is a daemon) and stop."""
        self._stop.set()
        self.join(timeout)

    def abandon(self) -> None:
        """Give up on what is left: lines still queued, and a delivery that fails from now on, are counted lost,
        neither retried nor dead-lettered (for when the destinations and the queues are going away themselves)."""
        self._abandoned = True
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def put(self, line: LogLine) -> None:
        self.lines.put(line)

    def _run(self) -> None:
        while (not self._stop.is_set() or not self.lines.empty()) and not self._abandoned:
            try:
                burst = [self.lines.get(timeout=0.1)]
            except queue.Empty:
                continue
            time.sleep(0.05)  # let the rest of the request's lines arrive: one delivery per burst
            while not self.lines.empty() and len(burst) < 1000:
                burst.append(self.lines.get_nowait())
            try:
                self._deliver(burst)
            except Exception:  # a bug here must not end delivery: later lines would silently go nowhere
                log.exception("log delivery failed on a burst of %d lines", len(burst))
        if self._abandoned and not self.lines.empty():
            left = self.lines.qsize()
            log.warning("log delivery stopped with %d lines not delivered", left)
            self.lost += left

    def _deliver(self, burst: list[LogLine]) -> None:
        documents = [json_object(message) for _, _, message in burst]  # each line parsed once
        for subscription in self.subscriptions:
            matched = [(stamp, message) for (group, stamp, message), document in zip(burst, documents, strict=True)
                       if group == subscription.group and subscription.pattern.holds(document)]
            if matched:
                self._invoke(subscription, encode_subscription_event(subscription.group, "local", matched),
                             len(matched))
        if self.put_metric_data is not None and not self._abandoned:
            self._publish(documents, self.put_metric_data)

    def _invoke(self, subscription: Subscription, event: Event, lines: int) -> None:
        """Invoke the destination as Lambda does an async invocation: retried, then dead-lettered."""
        for attempt, delay in enumerate((*self.retry_delays, None)):
            try:
                subscription.destination(event)
            except Exception as exc:
                if self._abandoned:
                    log.warning("log subscription delivery of %s stopped; %d lines not delivered", subscription.group,
                                lines)
                    self.lost += lines
                    return
                log.warning("log subscription delivery of %s failed (attempt %d): %s", subscription.group,
                            attempt + 1, exc)
                error = exc
                if delay is not None:
                    self._stop.wait(delay)  # shorter when stopping: the retries still run
                continue
            self.delivered += lines
            return
        self._dead_letter(subscription, event, error, lines)

    def _dead_letter(self, subscription: Subscription, event: Event, error: Exception, lines: int) -> None:
        if subscription.dead_letter is None:
            log.error("log subscription delivery of %s failed; %d lines lost (no dead-letter queue)",
                      subscription.group, lines)
            self.lost += lines
            return
        try:
            subscription.dead_letter(event, error)
        except Exception:
            log.exception("sending a failed delivery of %s to its dead-letter queue failed; %d lines lost",
                          subscription.group, lines)
            self.lost += lines
            return
        log.error("log subscription delivery of %s failed after %d attempts; its %d lines are in the dead-letter "
                  "queue", subscription.group, len(self.retry_delays) + 1, lines)
        self.dead_lettered += lines

    def _publish(self, documents: list[dict[str, Any] | None], put_metric_data: Callable[..., Any]) -> None:
        by_namespace: dict[str, list[dict[str, Any]]] = {}
        for document in documents:
            for namespace, datum in _emf_metric_data(document):
                by_namespace.setdefault(namespace, []).append(datum)
        for namespace, data in by_namespace.items():
            for start in range(0, len(data), 500):
                try:
                    put_metric_data(Namespace=namespace, MetricData=data[start:start + 500])
                    self.metrics_published += len(data[start:start + 500])
                except Exception:
                    log.exception("publishing EMF metrics to the embedded CloudWatch failed")
