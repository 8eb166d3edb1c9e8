"""The capture path to the letter: the log line of a prediction, the subscription event it travels in, the DynamoDB
item it becomes, the retry bounds at their edges, the usage counts, and what the capture function logs and counts
for each delivery (the operator's only view of it). Tables, logger and metrics are recording stand-ins."""

from __future__ import annotations

import base64
import gzip
import json
import random
import time
from collections import Counter
from decimal import Decimal
from typing import Any, ClassVar

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from ferry.runtime.capture import (
    Backoff,
    CaptureResult,
    CaptureWriteError,
    Retrier,
    add_usage,
    capture_line,
    capture_lines,
    capture_records,
    decode_subscription_event,
    encode_subscription_event,
    error_code,
    json_object,
    print_capture_lines,
    receive,
    report,
    retryable,
    to_item,
    write_captures,
)
from ferry.runtime.emf import prediction_metrics
from ferry.runtime.exceptions import CaptureEventError
from ferry.runtime.keys import usage_expiry

NOON_MS = 1_795_953_600_000  # 2026-11-29T12:00:00Z
DAY = "2026-11-29"


def record(number: int, **extra: Any) -> dict[str, Any]:
    return {"prediction_id": f"{number:032x}", "model": "sentiment", "version": "0123456789ab",
            "time": "2026-11-29T12:00:00.000+00:00", "epoch_ms": NOON_MS, "label": "positive", "score": 0.9, **extra}


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "PutItem")


class Table:
    """A table that answers each call with the next queued error, or succeeds; it records what it was asked."""

    def __init__(self, *errors: Exception | None):
        self.errors = list(errors)
        self.puts: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []

    def _answer(self) -> dict[str, Any]:
        error = self.errors.pop(0) if self.errors else None
        if error is not None:
            raise error
        return {}

    def put_item(self, **kwargs: Any) -> dict[str, Any]:
        self.puts.append(kwargs)
        return self._answer()

    def update_item(self, **kwargs: Any) -> dict[str, Any]:
        self.updates.append(kwargs)
        return self._answer()


class Highest(random.Random):
    """Every backoff wait at its upper bound."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def retrier(backoff: Backoff | None = None, *, deadline: float | None = None) -> tuple[Retrier, Clock]:
    clock = Clock()
    return Retrier(backoff, deadline=deadline, sleep=clock.sleep, clock=clock, rng=Highest()), clock


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any] | None]] = []

    def info(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.lines.append(("info", msg, kwargs.get("extra")))

    def error(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.lines.append(("error", msg, kwargs.get("extra")))

    def exception(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.lines.append(("exception", msg, kwargs.get("extra")))


class Metrics:
    def __init__(self) -> None:
        self.counts: list[tuple[str, float]] = []

    def add_metric(self, name: str, unit: Any, value: float, *args: Any, **kwargs: Any) -> None:
        assert unit == "Count"
        self.counts.append((name, value))

    def add_dimension(self, name: str, value: str) -> None:
        raise AssertionError("the capture function adds no dimension")


# -- the log line ----------------------------------------------------------------------------------------------------

def test_a_capture_line_is_a_powertools_line_with_the_record_and_its_metrics():
    rec = record(1)
    line = json.loads(capture_line(rec, service="predict", request_id="req-1", namespace="NS", latency_ms=12.5,
                                   batch_size=3))
    assert line == {"level": "INFO", "message": "prediction", "timestamp": rec["time"], "service": "predict",
                    "function_request_id": "req-1", "capture": rec,
                    **prediction_metrics(rec, "NS", latency_ms=12.5, batch_size=3)}
    assert "," + " " not in capture_line(rec, service="predict", request_id=None)  # compact: one short line


def test_a_request_s_lines_carry_its_latency_and_batch_size_on_the_first_only():
    records = [record(1), record(2), record(3)]
    text = capture_lines(records, service="predict", request_id="req-1", latency_ms=8.0, namespace="NS")
    assert text.endswith("\n") and text.count("\n") == 3
    assert text.split("\n")[:3] == [
        capture_line(records[0], service="predict", request_id="req-1", namespace="NS", latency_ms=8.0, batch_size=3),
        capture_line(records[1], service="predict", request_id="req-1", namespace="NS"),
        capture_line(records[2], service="predict", request_id="req-1", namespace="NS"),
    ]
    batch = capture_lines(records[:2], service="batch", request_id=None, latency_ms=None)
    assert batch == "".join(capture_line(rec, service="batch", request_id=None) + "\n" for rec in records[:2])
    assert "Latency" not in batch and "BatchSize" not in batch


def test_the_lines_are_printed_at_once(capsys):
    records = [record(1), record(2)]
    print_capture_lines(records, service="predict", request_id="req-9", latency_ms=3.0, namespace="NS")
    assert capsys.readouterr().out == capture_lines(records, service="predict", request_id="req-9", latency_ms=3.0,
                                                    namespace="NS")


# -- the subscription event ------------------------------------------------------------------------------------------

def test_an_event_is_encoded_as_cloudwatch_logs_sends_it():
    event = encode_subscription_event("/aws/lambda/predict", "2026/11/29/[$LATEST]abc", [(10, "one"), (20, "two ✓")])
    payload = json.loads(gzip.decompress(base64.b64decode(event["awslogs"]["data"])))
    assert payload == {"messageType": "DATA_MESSAGE", "owner": "000000000000", "logGroup": "/aws/lambda/predict",
                       "logStream": "2026/11/29/[$LATEST]abc", "subscriptionFilters": ["ferry-capture"],
                       "logEvents": [{"id": "0", "timestamp": 10, "message": "one"},
                                     {"id": "1", "timestamp": 20, "message": "two ✓"}]}
    assert decode_subscription_event(event) == payload


def _event(payload: bytes) -> dict[str, Any]:
    return {"awslogs": {"data": base64.b64encode(gzip.compress(payload)).decode()}}


@pytest.mark.parametrize(("event", "message"), [
    ({}, "not a CloudWatch Logs subscription event (KeyError)"),
    ({"awslogs": None}, "not a CloudWatch Logs subscription event (TypeError)"),
    ({"awslogs": {"data": "H4sI!!!!"}}, "not a CloudWatch Logs subscription event (Error)"),  # not base64
    ({"awslogs": {"data": base64.b64encode(b"plain").decode()}},
     "not a CloudWatch Logs subscription event (BadGzipFile)"),
    (_event(b"{oops"), "not a CloudWatch Logs subscription event (JSONDecodeError)"),
    (_event(b"[1, 2]"), "the subscription payload is not a JSON object"),
])
def test_what_is_not_a_subscription_event_is_refused_saying_why(event, message):
    with pytest.raises(CaptureEventError) as caught:
        decode_subscription_event(event)
    assert str(caught.value) == message


def test_capture_records_are_found_among_other_lines_and_malformed_events():
    first, second = record(1), record(2)
    events = ["not an event", {"id": "0"}, {"message": "START RequestId: 1"},
              {"message": '2026-11-29 {"level": "INFO", "message": "loaded"}'},
              {"message": json.dumps({"capture": {"prediction_id": 7}})},
              {"message": "x " + capture_line(first, service="p", request_id=None)},
              {"message": capture_line(second, service="p", request_id=None)}]
    payload = {"messageType": "DATA_MESSAGE", "logEvents": events}
    assert list(capture_records(payload)) == [first, second]
    assert list(capture_records({**payload, "messageType": "CONTROL_MESSAGE"})) == []
    assert list(capture_records({"messageType": "DATA_MESSAGE", "logEvents": None})) == []


def test_the_json_object_of_a_message():
    assert json_object('prefix {"a": [1]}') == {"a": [1]}
    assert json_object("no object") is None
    assert json_object('prefix {"a": ') is None


# -- the item --------------------------------------------------------------------------------------------------------

def test_a_record_becomes_an_item_with_its_window_key_and_ttl():
    rec = record(1, epoch_ms=NOON_MS + 999, truncated=False, key_id=None, tokens=12)
    assert to_item(rec, 30) == {"prediction_id": rec["prediction_id"], "model": "sentiment",
                                "version": "0123456789ab", "time": rec["time"], "epoch_ms": Decimal(NOON_MS + 999),
                                "label": "positive", "score": Decimal("0.9"), "truncated": False,
                                "tokens": Decimal(12), "model_version": "sentiment#0123456789ab",
                                "expires_at": NOON_MS // 1000 + 30 * 86_400}


# -- errors and retries ----------------------------------------------------------------------------------------------

def test_the_error_code_of_what_botocore_raises():
    assert error_code(client_error("ThrottlingException")) == "ThrottlingException"
    assert error_code(ValueError("x")) == "ValueError"

    class Odd(Exception):
        response: ClassVar[Any] = {}

    assert error_code(Odd()) == "Odd"
    Odd.response = {"Error": {}}
    assert error_code(Odd()) == "Odd"


@pytest.mark.parametrize(("error", "expected"), [
    (client_error("ThrottlingException"), True),
    (client_error("ServiceUnavailable", 503), True),
    (client_error("SomethingNew", 500), True),
    (client_error("SomethingNew", 503), True),
    (client_error("ValidationException", 499), False),
    (ClientError({"Error": {"Code": "ValidationException"}}, "PutItem"), False),
    (EndpointConnectionError(endpoint_url="https://dynamodb"), True),
    (ValueError("x"), False),
])
def test_what_may_succeed_later(error, expected):
    assert retryable(error) is expected


def test_backoff_settings_at_their_bounds():
    Backoff(attempts=1, base_s=0, cap_s=0, budget_s=0, usage_grace_s=0)
    for field in ("base_s", "cap_s", "budget_s", "usage_grace_s"):
        with pytest.raises(ValueError, match=r": attempts must be at least 1 and times not negative$"):
            Backoff(**{field: -0.01})
    with pytest.raises(ValueError, match=r"^Backoff\(attempts=0, .*: attempts must be at least 1"):
        Backoff(attempts=0)


def test_the_wait_before_a_retry_doubles_up_to_the_cap():
    backoff = Backoff(base_s=0.05, cap_s=2.0)
    assert [backoff.delay(retry, Highest()) for retry in range(7)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0]


def test_a_fresh_retrier_has_waited_nothing_and_is_in_time():
    fresh, clock = retrier(deadline=150.0)
    assert (fresh.waited_s, fresh.retries, fresh.out_of_time, fresh.budget_s) == (0.0, 0, False, 20.0)
    assert fresh.expired() is False
    clock.now = 150.0
    assert fresh.expired() is True  # at the deadline, not only past it


def test_a_retry_may_use_the_budget_exactly_and_end_just_before_the_deadline():
    table = Table(client_error("ThrottlingException"), client_error("ThrottlingException"))
    exact, clock = retrier(Backoff(base_s=0.5, budget_s=1.5))
    assert exact(lambda: table.put_item()) == {}
    assert clock.sleeps == [0.5, 1.0] and exact.waited_s == 1.5 and exact.retries == 2
    short, _ = retrier(Backoff(base_s=0.5, budget_s=1.49))
    with pytest.raises(ClientError):
        short(Table(client_error("ThrottlingException"), client_error("ThrottlingException")).put_item)
    assert short.out_of_time and short.retries == 1
    # the deadline: a wait that would end on it is refused, one that ends just before it is made
    at_deadline, clock = retrier(Backoff(base_s=0.5), deadline=100.5)
    with pytest.raises(ClientError):
        at_deadline(Table(client_error("ThrottlingException")).put_item)
    assert at_deadline.out_of_time and clock.sleeps == []
    before, clock = retrier(Backoff(base_s=0.5), deadline=100.51)
    assert before(Table(client_error("ThrottlingException")).put_item) == {} and clock.sleeps == [0.5]


def test_extending_the_budget_clears_the_refusal():
    late, _ = retrier(Backoff(base_s=0.5, budget_s=0.1))
    with pytest.raises(ClientError):
        late(Table(client_error("ThrottlingException")).put_item)
    assert late.expired()
    late.extend(3.0)
    assert (late.budget_s, late.out_of_time, late.expired()) == (3.0, False, False)


def test_a_retrier_for_an_invocation_keeps_a_reserve_at_its_end():
    backoff = Backoff(attempts=3)
    for remaining_ms, usable_s in ((60_000, 50.0), (4_000, 2.0), (0, 0.0)):
        before = time.monotonic()
        made = Retrier.within(remaining_ms, backoff)
        after = time.monotonic()
        assert before + usable_s <= made.deadline <= after + usable_s
        assert made.backoff is backoff
    assert Retrier.within(1_000).backoff == Backoff()


# -- writing ---------------------------------------------------------------------------------------------------------

def test_invalid_records_are_counted_one_by_one_and_only_real_key_ids_count_usage():
    table = Table()
    records = [{"prediction_id": "a"}, {"prediction_id": "b", "epoch_ms": 1}, record(1, key_id=""),
               record(2, key_id=5), record(3, key_id="k1"), record(4, key_id="k1")]
    result = write_captures(table, records, 30, retrier=retrier()[0])
    assert (result.written, result.invalid, result.duplicates, result.failed) == (4, 2, 0, 0)
    assert result.usage == Counter({("k1", DAY): 2})


def test_usage_is_added_per_key_and_day_with_its_expiry_skipping_nothing_but_empty_counts():
    table = Table()
    usage = {("k0", DAY): 0, ("k1", DAY): 2, ("k2", "2026-11-30"): 1}
    assert add_usage(table, usage, ttl_days=3) == Counter()
    assert table.updates == [
        {"Key": {"key_id": key, "day": day}, "UpdateExpression": "ADD predictions :n SET expires_at = :e",
         "ExpressionAttributeValues": {":n": count, ":e": usage_expiry(day, 3)}}
        for (key, day), count in usage.items() if count]
    retried = Table(client_error("ValidationException"))
    lost = add_usage(retried, {("k0", DAY): 0, ("k1", DAY): 2, ("k2", DAY): 1}, retrier=retrier()[0])
    assert lost == Counter({("k1", DAY): 2}) and len(retried.updates) == 2


# -- the capture function --------------------------------------------------------------------------------------------

def test_an_event_that_is_not_a_subscription_event_is_dropped_logged_and_counted():
    log, metrics = Log(), Metrics()
    answer = receive({"not": "logs"}, Table, 30, None, retrier()[0], logger=log, metrics=metrics)
    assert answer == {"written": 0, "duplicates": 0, "invalid": 1}
    assert log.lines == [("error", "dropped an event that is not a subscription event",
                          {"reason": "not a CloudWatch Logs subscription event (KeyError)"})]
    assert metrics.counts == [("CaptureEventsRejected", 1)]


def _delivery(*records: dict[str, Any]) -> dict[str, Any]:
    return encode_subscription_event("g", "s", [(1, capture_line(rec, service="p", request_id=None))
                                                for rec in records])


def test_a_delivery_is_written_counted_for_its_keys_and_reported():
    table, usage = Table(client_error("ThrottlingException")), Table()
    log, metrics = Log(), Metrics()
    given, _ = retrier()
    event = _delivery(record(1, key_id="k1"), record(2), record(3, key_id="k1"))
    answer = receive(event, lambda: table, 30, usage, given, logger=log, metrics=metrics)
    assert answer == {"written": 3, "duplicates": 0, "invalid": 0}
    assert given.retries == 1  # the retrier given was the one used
    assert [update["Key"] for update in usage.updates] == [{"key_id": "k1", "day": DAY}]
    assert metrics.counts == [("CapturesWritten", 3), ("CaptureDuplicates", 0), ("CaptureWriteRetries", 1),
                              ("CapturesFailed", 0)]
    assert log.lines == [("info", "captured", {"written": 3, "duplicates": 0, "invalid": 0, "failed": 0,
                                               "retries": 1, "counted_for_keys": 2})]


def test_a_delivery_with_captures_not_written_is_reported_then_raised():
    table = Table(client_error("ValidationException"), client_error("ConditionalCheckFailedException"))
    log, metrics = Log(), Metrics()
    with pytest.raises(CaptureWriteError) as caught:
        receive(_delivery(record(1), record(2), record(3)), lambda: table, 30, None, retrier()[0], logger=log,
                metrics=metrics)
    assert metrics.counts == [("CapturesWritten", 1), ("CaptureDuplicates", 1), ("CaptureWriteRetries", 0),
                              ("CapturesFailed", 1)]
    assert log.lines == [
        ("info", "captured", {"written": 1, "duplicates": 1, "invalid": 0, "failed": 1, "retries": 0,
                              "counted_for_keys": 0}),
        ("error", "captures not written: Lambda retries the event, then sends it to the dead-letter queue",
         {"reason": str(caught.value), "errors": {"ValidationException": 1}}),
    ]


def test_usage_counts_the_table_refused_are_logged_to_add_by_hand():
    log, metrics = Log(), Metrics()
    result = CaptureResult(written=3, duplicates=2, invalid=1, failed=0, retries=4,
                           usage=Counter({("k1", DAY): 3}), usage_lost=Counter({("k1", DAY): 2, ("k2", DAY): 1}))
    report(result, logger=log, metrics=metrics)
    assert metrics.counts == [("CapturesWritten", 3), ("CaptureDuplicates", 2), ("CaptureWriteRetries", 4),
                              ("CapturesFailed", 0), ("UsageCountsLost", 3)]
    assert log.lines == [
        ("error", "usage counts not added", {"usage_lost": [{"key_id": "k1", "day": DAY, "predictions": 2},
                                                            {"key_id": "k2", "day": DAY, "predictions": 1}]}),
        ("info", "captured", {"written": 3, "duplicates": 2, "invalid": 1, "failed": 0, "retries": 4,
                              "counted_for_keys": 3}),
    ]
