"""Captured predictions: from the predict function's log records to DynamoDB, idempotently.

The predict handler logs one structured record per prediction; a CloudWatch Logs subscription filter
delivers those lines (gzip + base64) to the capture function, at least once. Each record is written with a
conditional put on its prediction id, so a redelivered batch changes nothing.

A put that DynamoDB throttles (or fails on its side) is retried, that record alone, with capped and jittered
backoff inside a time budget (:class:`Backoff`); what is still not written makes the delivery fail
(:class:`CaptureWriteError`), so that Lambda retries the event and then leaves it in the capture function's
dead-letter queue, from which ``ferry captures replay`` (:mod:`ferry.runtime.replay`) writes it. Only a put refused
by the condition is a duplicate.

Each record newly written that names the API key it was made with (``key_id``) also counts once toward that
key's predictions of its UTC day in the usage table, which the authorizer reads to enforce daily quotas
(:mod:`ferry.runtime.keys`): one ``ADD`` per key and day per delivery, and none for a redelivered record.
"""

from __future__ import annotations

import base64
import functools
import gzip
import json
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from ferry.runtime.constants import CAPTURE_KEY, METRICS_NAMESPACE
from ferry.runtime.emf import prediction_metrics
from ferry.runtime.exceptions import CaptureEventError as CaptureEventError  # importable from here as before
from ferry.runtime.exceptions import CaptureWriteError as CaptureWriteError
from ferry.runtime.keys import USAGE_TTL_DAYS, usage_expiry, utc_day
from ferry.runtime.telemetry import Log, MetricSink, add_count

SECONDS_PER_DAY = 86_400
NAMESPACE = METRICS_NAMESPACE  # the default namespace of the capture lines' metrics (Settings.metrics_namespace)


_COMPACT = json.JSONEncoder(separators=(",", ":"))  # built once: json.dumps with options builds one a call


def capture_line(record: Mapping[str, Any], *, service: str, request_id: str | None, namespace: str = NAMESPACE,
                 latency_ms: float | None = None, batch_size: int | None = None) -> str:
    """The log line of one prediction: the capture record under ``capture``, its EMF metrics
    (:func:`ferry.runtime.emf.prediction_metrics`), and the keys a Powertools log line has (level, message,
    timestamp, service).

    Built with one encoder call rather than through the Logger: this runs for every prediction, and the
    Logger's formatting costs several times as much for a line whose shape never changes.
    """
    line = {"level": "INFO", "message": "prediction", "timestamp": record["time"], "service": service,
            "function_request_id": request_id, CAPTURE_KEY: record,
            **prediction_metrics(record, namespace, latency_ms=latency_ms, batch_size=batch_size)}
    return _COMPACT.encode(line)


def capture_lines(records: Sequence[Mapping[str, Any]], *, service: str, request_id: str | None,
                  latency_ms: float | None, namespace: str = NAMESPACE) -> str:
    """One request's capture lines, each ending in a newline; the first carries the request's metrics (latency
    and batch size), unless `latency_ms` is None (batch files: their model calls are no requests to time)."""
    first = latency_ms is not None
    return "".join(
        capture_line(record, service=service, request_id=request_id, namespace=namespace,
                     latency_ms=latency_ms if index == 0 else None,
                     batch_size=len(records) if index == 0 and first else None)
        + "\n"
        for index, record in enumerate(records)
    )


def print_capture_lines(records: Sequence[Mapping[str, Any]], *, service: str, request_id: str | None,
                        latency_ms: float | None, namespace: str = NAMESPACE) -> None:
    """Write :func:`capture_lines` to standard output at once, where Lambda sends it to the function's log
    group; the log group's subscription filter delivers them to the capture function."""
    sys.stdout.write(capture_lines(records, service=service, request_id=request_id, latency_ms=latency_ms,
                                   namespace=namespace))
    sys.stdout.flush()


def decode_subscription_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """The payload of a CloudWatch Logs subscription event: {"messageType", "logEvents": [...], ...}."""
    try:
        data = event["awslogs"]["data"]
        payload = json.loads(gzip.decompress(base64.b64decode(data, validate=True)))
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise CaptureEventError(f"not a CloudWatch Logs subscription event ({exc.__class__.__name__})") from None
    if not isinstance(payload, dict):
        raise CaptureEventError("the subscription payload is not a JSON object")
    return payload


def encode_subscription_event(log_group: str, log_stream: str, messages: Iterable[tuple[int, str]]) -> dict[str, Any]:
    """The event CloudWatch Logs sends a subscribed function: what the local stack delivers too."""
    log_events = [{"id": str(index), "timestamp": timestamp, "message": message}
                  for index, (timestamp, message) in enumerate(messages)]
    payload = {"messageType": "DATA_MESSAGE", "owner": "000000000000", "logGroup": log_group,
               "logStream": log_stream, "subscriptionFilters": ["ferry-capture"], "logEvents": log_events}
    data = base64.b64encode(gzip.compress(json.dumps(payload).encode("utf-8"))).decode("ascii")
    return {"awslogs": {"data": data}}


def json_object(message: str) -> dict[str, Any] | None:
    """The JSON object of a log message (after any text prefix, such as a timestamp), or None."""
    start = message.find("{")
    if start < 0:
        return None
    try:
        document = json.loads(message[start:])
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def capture_records(payload: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The capture records among the log events; other lines (and CONTROL_MESSAGE probes) are skipped."""
    if payload.get("messageType") != "DATA_MESSAGE":
        return
    for log_event in payload.get("logEvents") or []:
        line = json_object(log_event.get("message", "") if isinstance(log_event, dict) else "")
        record = line.get(CAPTURE_KEY) if line else None
        if isinstance(record, dict) and isinstance(record.get("prediction_id"), str):
            yield record


def to_item(record: Mapping[str, Any], ttl_days: int) -> dict[str, Any]:
    """A capture record as a DynamoDB item: numbers as Decimal, the window index key, and a TTL."""
    item = {key: _dynamo_value(value) for key, value in record.items() if value is not None}
    item["model_version"] = f"{record['model']}#{record['version']}"
    item["expires_at"] = int(record["epoch_ms"] // 1000) + ttl_days * SECONDS_PER_DAY
    return item


def _dynamo_value(value: Any) -> Any:
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return Decimal(str(value))
    return value


# -- writing, with retries ---------------------------------------------------------------------------------------

# DynamoDB errors that say "not now" rather than "never": throttling, and the service failing on its side (any 5xx).
RETRYABLE_CODES = frozenset({"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
                             "InternalServerError", "ServiceUnavailable"})


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore error (its class name when it is not a service answer)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or exc.__class__.__name__)
    return exc.__class__.__name__


def retryable(exc: BaseException) -> bool:
    """Whether the same call may succeed later: throttled, a server error, or the connection failed on the way."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return error_code(exc) in RETRYABLE_CODES or int(status) >= 500
    return isinstance(exc, ConnectionError | HTTPClientError)


@dataclass(frozen=True)
class Backoff:
    """How long to keep trying a write that failed for a reason that passes (:func:`retryable`).

    Capped exponential backoff with full jitter: before retry ``n`` (0-based) the wait is uniform in
    ``[0, min(cap_s, base_s * 2**n))``, so writers throttled together spread out instead of retrying in step. A
    record gets `attempts` tries; the records of a delivery share `budget_s` of retrying, and no retry starts whose
    wait would end past it; the usage counts after them get `usage_grace_s` more (a count lost is lost for good,
    where captures not written come back with Lambda's retry). With the defaults one record waits at most
    0.05 + 0.1 + ... + 2 = 5.15 s over its 8 tries and a delivery retries for at most 20 + 5 s, which leaves the
    capture function's 60 s room for a last call's own botocore retries (standard mode: 4 attempts, ~7 s at most).
    """

    attempts: int = 8
    base_s: float = 0.05
    cap_s: float = 2.0
    budget_s: float = 20.0
    usage_grace_s: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or min(self.base_s, self.cap_s, self.budget_s, self.usage_grace_s) < 0:
            raise ValueError(f"{self}: attempts must be at least 1 and times not negative")

    def delay(self, retry: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.cap_s, self.base_s * 2 ** retry))


T = TypeVar("T")


class Retrier:
    """Runs AWS calls under one :class:`Backoff` and one deadline (a :func:`time.monotonic` time), and counts the
    retries it made and the time it waited. Two limits: the time spent waiting between retries (the backoff's
    budget, shared by every record of a delivery) and the deadline, past which no call starts at all (the
    invocation's end, less a reserve). Writing itself is never cut short by the budget: a large delivery on a
    slow table takes the time it takes. Sleep, clock and random source are passed in so tests run without waiting.
    """

    def __init__(self, backoff: Backoff | None = None, *, deadline: float | None = None,
                 sleep: Callable[[float], None] | None = None, clock: Callable[[], float] | None = None,
                 rng: random.Random | None = None):
        self.backoff = backoff or Backoff()
        self.clock = clock or time.monotonic
        self.sleep = sleep or time.sleep
        self.rng = rng or random.Random()
        self.deadline = math.inf if deadline is None else deadline
        self.budget_s = self.backoff.budget_s
        self.waited_s = 0.0
        self.retries = 0
        self.out_of_time = False  # a retry was refused for want of time: the next records are not tried at all

    RESERVE_S = 10.0  # kept at the end of an invocation: the usage counts, a last call's own SDK retries, the logs

    @classmethod
    def within(cls, remaining_ms: int, backoff: Backoff | None = None) -> Retrier:
        """A retrier for an invocation with `remaining_ms` left: no call starts in its last RESERVE_S seconds
        (or in its second half, for an invocation shorter than twice that)."""
        reserve = min(cls.RESERVE_S, remaining_ms / 2000)
        return cls(backoff, deadline=time.monotonic() + remaining_ms / 1000 - reserve)

    def expired(self) -> bool:
        return self.out_of_time or self.clock() >= self.deadline

    def extend(self, seconds: float) -> None:
        """`seconds` more of waiting, for calls that must still be tried when the budget is spent (the deadline
        still holds)."""
        self.budget_s = self.waited_s + seconds
        self.out_of_time = False

    def __call__(self, call: Callable[[], T]) -> T:
        """`call()`, retried while it fails for a reason that passes, up to the attempts, the budget and the
        deadline; then its last error is raised."""
        for retry in range(self.backoff.attempts):
            try:
                return call()
            except Exception as exc:
                if not retryable(exc) or retry + 1 >= self.backoff.attempts:
                    raise
                pause = self.backoff.delay(retry, self.rng)
                if self.waited_s + pause > self.budget_s or self.clock() + pause >= self.deadline:
                    self.out_of_time = True
                    raise
            self.retries += 1
            self.waited_s += pause
            self.sleep(pause)
        raise AssertionError("unreachable: the last attempt returns or raises")


@dataclass
class CaptureResult:
    written: int = 0
    duplicates: int = 0
    invalid: int = 0
    failed: int = 0  # records not written: an error other than the condition check, or no time left to try
    errors: Counter[str] = field(default_factory=Counter)  # error code -> records it failed
    usage: Counter[tuple[str, str]] = field(default_factory=Counter)  # (key_id, UTC day) -> records newly written
    usage_lost: Counter[tuple[str, str]] = field(default_factory=Counter)  # counts the usage table refused
    retries: int = 0


def write_captures(table: Any, records: Iterable[Mapping[str, Any]], ttl_days: int,
                   usage_table: Any | None = None, retrier: Retrier | None = None) -> CaptureResult:
    """Write each record once: a conditional put on prediction_id makes redelivery harmless.

    A put that is throttled or fails on the server is retried, that record alone, under `retrier` (default: a
    :class:`Backoff` from now); a record still not written after that, or failed by any other error, counts in
    ``result.failed`` and the rest are still tried while time remains. If any failed, :class:`CaptureWriteError`
    is raised after the others: only a record refused by the condition (already there) is a duplicate.

    Records newly written that carry a ``key_id`` are counted by key and UTC day in ``result.usage`` and, with a
    `usage_table`, added to it (:func:`add_usage`) even when writes fail or an error escapes half-way: Lambda then
    retries the delivery, and the records already written come back as duplicates, which count for nothing."""
    retrier = retrier or Retrier()
    result = CaptureResult()
    try:
        for record in records:
            _write_one(table, record, ttl_days, retrier, result)
    finally:
        if usage_table is not None:
            retrier.extend(retrier.backoff.usage_grace_s)
            result.usage_lost = add_usage(usage_table, result.usage, retrier=retrier)
        result.retries = retrier.retries
    if result.failed:
        raise CaptureWriteError(result)
    return result


def _write_one(table: Any, record: Mapping[str, Any], ttl_days: int, retrier: Retrier, result: CaptureResult) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        item = to_item(record, ttl_days)
    except (KeyError, TypeError, ValueError):
        result.invalid += 1
        return
    if retrier.expired():  # out of time: left to Lambda's retry, not tried (each try may wait on botocore's own)
        result.failed += 1
        result.errors["NotTried"] += 1
        return
    try:
        retrier(functools.partial(table.put_item, Item=item, ConditionExpression=_NEW_ONLY))
    except (BotoCoreError, ClientError) as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            result.duplicates += 1
        else:
            result.failed += 1
            result.errors[error_code(exc)] += 1
        return
    result.written += 1
    owner = record.get("key_id")
    if isinstance(owner, str) and owner:
        result.usage[(owner, utc_day(int(record["epoch_ms"]) / 1000))] += 1


_NEW_ONLY = "attribute_not_exists(prediction_id)"


def add_usage(usage_table: Any, usage: Mapping[tuple[str, str], int], ttl_days: int = USAGE_TTL_DAYS,
              retrier: Retrier | None = None) -> Counter[tuple[str, str]]:
    """Add predictions to each key's count of a UTC day: one UpdateItem per (key_id, day), and a TTL a few days
    after that day so the table keeps only recent days.

    Without a `retrier` an error is raised as it comes. With one, each update is retried under it, and the counts
    still refused are returned (and the other keys' still added) rather than raised: an ``ADD`` cannot be made
    idempotent, and a redelivery finds its captures already written, so failing the delivery would not restore
    them; the caller logs them."""
    from botocore.exceptions import BotoCoreError, ClientError

    lost: Counter[tuple[str, str]] = Counter()
    for (identifier, day), count in usage.items():
        if count <= 0:
            continue
        update = functools.partial(
            usage_table.update_item,
            Key={"key_id": identifier, "day": day}, UpdateExpression="ADD predictions :n SET expires_at = :e",
            ExpressionAttributeValues={":n": count, ":e": usage_expiry(day, ttl_days)})
        if retrier is None:
            update()
            continue
        try:
            retrier(update)
        except (BotoCoreError, ClientError):
            lost[(identifier, day)] += count
    return lost


# -- the capture function -----------------------------------------------------------------------------------------

def receive(event: Mapping[str, Any], table: Callable[[], Any], ttl_days: int, usage_table: Any | None,
            retrier: Retrier, *, logger: Log, metrics: MetricSink) -> dict[str, int]:
    """What the capture function does with one delivery: write its captures (:func:`write_captures`) into the
    table `table()` makes, report what happened, and answer the counts.

    An event that is not a subscription event is dropped (logged, counted): no retry can make it one. Captures
    not written raise :class:`CaptureWriteError` after the report, so that Lambda retries the event and then
    sends it to the dead-letter queue."""
    try:
        payload = decode_subscription_event(event)
    except CaptureEventError as error:
        logger.error("dropped an event that is not a subscription event", extra={"reason": str(error)})
        add_count(metrics, "CaptureEventsRejected")
        return {"written": 0, "duplicates": 0, "invalid": 1}
    try:
        result = write_captures(table(), capture_records(payload), ttl_days, usage_table, retrier)
    except CaptureWriteError as error:
        report(error.result, logger=logger, metrics=metrics)
        logger.error("captures not written: Lambda retries the event, then sends it to the dead-letter queue",
                     extra={"reason": str(error), "errors": dict(error.result.errors)})
        raise
    report(result, logger=logger, metrics=metrics)
    return {"written": result.written, "duplicates": result.duplicates, "invalid": result.invalid}


def report(result: CaptureResult, *, logger: Log, metrics: MetricSink) -> None:
    """A delivery's counts as metrics and one log line; usage counts the table refused, logged to add by hand."""
    add_count(metrics, "CapturesWritten", result.written)
    add_count(metrics, "CaptureDuplicates", result.duplicates)
    add_count(metrics, "CaptureWriteRetries", result.retries)
    add_count(metrics, "CapturesFailed", result.failed)
    if result.usage_lost:  # an ADD cannot be retried by redelivery: the counts to add by hand, if need be
        lost = [{"key_id": key_id, "day": day, "predictions": lost}
                for (key_id, day), lost in result.usage_lost.items()]
        logger.error("usage counts not added", extra={"usage_lost": lost})
        add_count(metrics, "UsageCountsLost", sum(result.usage_lost.values()))
    logger.info("captured", extra={"written": result.written, "duplicates": result.duplicates,
                                   "invalid": result.invalid, "failed": result.failed, "retries": result.retries,
                                   "counted_for_keys": sum(result.usage.values())})
