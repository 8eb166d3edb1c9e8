"""No capture lost to DynamoDB: throttled writes are retried one record at a time with bounded, jittered backoff;
what still fails is never counted as a duplicate and fails the delivery, so that Lambda retries it and then leaves
it in the dead-letter queue. moto never throttles, so the table here is a botocore Stubber with botocore's own
retries off: every error it answers reaches the capture code."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.stub import ANY, Stubber

from ferry.local.functions import LambdaContext
from ferry.runtime.capture import (
    Backoff,
    CaptureWriteError,
    Retrier,
    capture_line,
    encode_subscription_event,
    to_item,
    write_captures,
)

ROOT = Path(__file__).resolve().parents[2]
NOON_MS = 1_795_953_600_000  # 2026-11-29T12:00:00Z
NEW_ONLY = "attribute_not_exists(prediction_id)"


def record(number: int, key: str | None = None) -> dict:
    found = {"prediction_id": f"{number:032x}", "model": "sentiment", "version": "0123456789ab",
             "time": "2026-11-29T12:00:00.000+00:00", "epoch_ms": NOON_MS, "label": "positive", "score": 0.9}
    return {**found, "key_id": key} if key else found


def stubbed(name: str) -> tuple[object, Stubber]:
    """A table whose client answers only what the test queued, with botocore's retries off."""
    resource = boto3.resource("dynamodb", region_name="us-east-1", config=Config(retries={"max_attempts": 1}),
                              aws_access_key_id="x", aws_secret_access_key="x")
    table = resource.Table(name)
    return table, Stubber(table.meta.client)


def put(stubber: Stubber, rec: dict, error: str | None = None, status: int = 400) -> None:
    expected = {"TableName": "captures", "Item": to_item(rec, 90), "ConditionExpression": NEW_ONLY}
    if error is None:
        stubber.add_response("put_item", {}, expected_params=expected)
    else:
        stubber.add_client_error("put_item", service_error_code=error, http_status_code=status,
                                 expected_params=expected)


class FakeTime:
    """A clock that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def retrier(fake: FakeTime, backoff: Backoff | None = None) -> Retrier:
    return Retrier(backoff, sleep=fake.sleep, clock=fake.clock, rng=random.Random(7))


def test_throttled_puts_are_retried_per_record_and_none_is_lost():
    table, stubber = stubbed("captures")
    records = [record(n) for n in range(1, 6)]
    # record 1 throttled twice, 3 throttled then a server error, 5 throttled: each retried alone, none put twice
    put(stubber, records[0], "ProvisionedThroughputExceededException")
    put(stubber, records[0], "ThrottlingException")
    put(stubber, records[0])
    put(stubber, records[1])
    put(stubber, records[2], "RequestLimitExceeded")
    put(stubber, records[2], "InternalServerError", status=500)
    put(stubber, records[2])
    put(stubber, records[3])
    put(stubber, records[4], "ServiceUnavailable", status=503)
    put(stubber, records[4])
    fake = FakeTime()
    with stubber:
        result = write_captures(table, records, ttl_days=90, retrier=retrier(fake))
        stubber.assert_no_pending_responses()
    assert (result.written, result.duplicates, result.invalid, result.failed) == (5, 0, 0, 0)
    assert result.retries == len(fake.sleeps) == 5
    backoff = Backoff()
    # full jitter under the cap: retry n of a record waits in [0, min(cap, base * 2**n))
    assert fake.sleeps[0] < backoff.base_s and fake.sleeps[1] < 2 * backoff.base_s


def test_a_table_that_stays_throttled_fails_the_delivery_after_bounded_attempts():
    table, stubber = stubbed("captures")
    records = [record(1), record(2), record(3)]
    backoff = Backoff(attempts=4, base_s=0.05, cap_s=2.0, budget_s=20.0)
    put(stubber, records[0])  # written before the throttling starts
    for rec in records[1:]:
        for _ in range(backoff.attempts):
            put(stubber, rec, "ProvisionedThroughputExceededException")
    fake = FakeTime()
    with stubber, pytest.raises(CaptureWriteError) as raised:
        write_captures(table, records, ttl_days=90, retrier=retrier(fake, backoff))
    stubber.assert_no_pending_responses()  # exactly `attempts` puts for each throttled record, no more
    result = raised.value.result
    assert (result.written, result.duplicates, result.failed) == (1, 0, 2)
    assert result.errors == {"ProvisionedThroughputExceededException": 2}
    assert result.retries == 2 * (backoff.attempts - 1)
    assert sum(fake.sleeps) <= 2 * sum(min(backoff.cap_s, backoff.base_s * 2 ** n) for n in range(3))
    assert "2 captures not written (ProvisionedThroughputExceededException x2); 1 written" in str(raised.value)


def test_the_delivery_stops_retrying_at_its_time_budget():
    table, stubber = stubbed("captures")
    records = [record(n) for n in range(1, 4)]
    backoff = Backoff(attempts=1000, base_s=1.0, cap_s=1.0, budget_s=5.0)
    for _ in range(100):  # more than the budget lets it use
        put(stubber, records[0], "ThrottlingException")
    fake = FakeTime()
    with stubber, pytest.raises(CaptureWriteError) as raised:
        write_captures(table, records, ttl_days=90, retrier=retrier(fake, backoff))
    assert 0 < fake.now - 1000.0 < backoff.budget_s  # no wait ends past the budget
    result = raised.value.result  # the first record used it up: the others are left to Lambda's retry, not tried
    assert result.failed == 3 and result.errors == {"ThrottlingException": 1, "NotTried": 2}
    assert result.retries == len(fake.sleeps) > 3


def test_a_large_slow_delivery_is_written_whole_the_budget_counts_only_waiting():
    """Writing takes the time it takes: only waits between retries use the budget, and only the deadline (the
    invocation's end) stops new writes. 40 writes of 1 s each, over a budget of 5 s, are all written."""
    table, stubber = stubbed("captures")
    records = [record(n) for n in range(1, 41)]
    fake = FakeTime()
    for rec in records:
        put(stubber, rec)
    slow = Retrier(Backoff(budget_s=5.0), sleep=fake.sleep, clock=fake.clock, rng=random.Random(7))
    real_put = table.put_item

    def put_taking_a_second(**kwargs):
        fake.now += 1.0
        return real_put(**kwargs)

    table.put_item = put_taking_a_second
    with stubber:
        result = write_captures(table, records, ttl_days=90, retrier=slow)
    assert (result.written, result.failed, fake.now - 1000.0) == (40, 0, 40.0)


def test_no_write_starts_past_the_deadline():
    table, stubber = stubbed("captures")
    records = [record(n) for n in range(1, 6)]
    fake = FakeTime()
    for rec in records[:2]:
        put(stubber, rec)
    late = Retrier(sleep=fake.sleep, clock=fake.clock, deadline=fake.now + 1.5)
    real_put = table.put_item

    def put_taking_a_second(**kwargs):
        fake.now += 1.0
        return real_put(**kwargs)

    table.put_item = put_taking_a_second
    with stubber, pytest.raises(CaptureWriteError) as raised:
        write_captures(table, records, ttl_days=90, retrier=late)
    assert raised.value.result.written == 2 and raised.value.result.errors == {"NotTried": 3}


def test_usage_is_still_counted_when_the_captures_spent_the_budget():
    table, stubber = stubbed("captures")
    usage, usage_stubber = stubbed("usage")
    records = [record(1, "e" * 16), record(2, "e" * 16)]
    backoff = Backoff(attempts=1000, base_s=1.0, cap_s=1.0, budget_s=3.0, usage_grace_s=5.0)
    put(stubber, records[0])
    for _ in range(100):
        put(stubber, records[1], "ThrottlingException")
    usage_stubber.add_client_error("update_item", service_error_code="ThrottlingException")
    usage_stubber.add_response("update_item", {})
    fake = FakeTime()
    with stubber, usage_stubber, pytest.raises(CaptureWriteError) as raised:
        write_captures(table, records, ttl_days=90, usage_table=usage, retrier=retrier(fake, backoff))
    usage_stubber.assert_no_pending_responses()  # retried after the captures' budget was spent: the grace
    result = raised.value.result
    assert (result.written, result.failed) == (1, 1) and dict(result.usage) == {("e" * 16, "2026-11-29"): 1}
    assert not result.usage_lost and fake.now - 1000.0 < backoff.budget_s + backoff.usage_grace_s


@pytest.mark.parametrize("code", ["ValidationException", "AccessDeniedException", "ResourceNotFoundException",
                                  "ItemCollectionSizeLimitExceeded"])
def test_an_error_other_than_the_condition_is_never_a_duplicate(code):
    table, stubber = stubbed("captures")
    records = [record(1), record(2), record(3)]
    put(stubber, records[0], "ConditionalCheckFailedException")  # already there: the only duplicate
    put(stubber, records[1], code)  # not retried: it would fail the same way
    put(stubber, records[2])  # the others are still written
    with stubber, pytest.raises(CaptureWriteError) as raised:
        write_captures(table, records, ttl_days=90, retrier=retrier(FakeTime()))
    stubber.assert_no_pending_responses()
    result = raised.value.result
    assert (result.written, result.duplicates, result.failed) == (1, 1, 1)
    assert result.errors == {code: 1} and result.retries == 0


def test_usage_counts_only_captures_newly_written_and_retries_its_own_throttling():
    table, stubber = stubbed("captures")
    usage, usage_stubber = stubbed("usage")
    key = "a" * 16
    records = [record(1, key), record(2, key), record(3, key), record(4, key)]
    put(stubber, records[0], "ProvisionedThroughputExceededException")
    put(stubber, records[0])  # written after a retry: counts
    put(stubber, records[1], "ConditionalCheckFailedException")  # a redelivered one: counts nothing
    put(stubber, records[2], "AccessDeniedException")  # not written: counts nothing
    put(stubber, records[3])
    update = {"TableName": "usage", "Key": {"key_id": key, "day": "2026-11-29"},
              "UpdateExpression": "ADD predictions :n SET expires_at = :e",
              "ExpressionAttributeValues": {":n": 2, ":e": ANY}}
    usage_stubber.add_client_error("update_item", service_error_code="ThrottlingException", expected_params=update)
    usage_stubber.add_response("update_item", {}, expected_params=update)
    with stubber, usage_stubber, pytest.raises(CaptureWriteError) as raised:
        write_captures(table, records, ttl_days=90, usage_table=usage, retrier=retrier(FakeTime()))
    usage_stubber.assert_no_pending_responses()
    result = raised.value.result
    assert dict(result.usage) == {(key, "2026-11-29"): 2} and not result.usage_lost


def test_usage_the_table_keeps_refusing_is_reported_not_raised():
    table, stubber = stubbed("captures")
    usage, usage_stubber = stubbed("usage")
    put(stubber, record(1, "b" * 16))
    for _ in range(2):
        usage_stubber.add_client_error("update_item", service_error_code="ThrottlingException")
    with stubber, usage_stubber:
        result = write_captures(table, [record(1, "b" * 16)], ttl_days=90, usage_table=usage,
                                retrier=retrier(FakeTime(), Backoff(attempts=2)))
    assert result.written == 1 and dict(result.usage_lost) == {("b" * 16, "2026-11-29"): 1}


def test_backoff_settings_are_checked():
    with pytest.raises(ValueError, match="attempts"):
        Backoff(attempts=0)


# -- the handler ---------------------------------------------------------------------------------------------------

@pytest.fixture()
def capture_app(monkeypatch):
    monkeypatch.setenv("FERRY_CAPTURE_TABLE", "captures")
    monkeypatch.delenv("FERRY_USAGE_TABLE", raising=False)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Ferry")
    path = ROOT / "functions" / "capture" / "app.py"
    spec = importlib.util.spec_from_file_location("ferry_test_capture_app", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def event_of(records: list[dict]) -> dict:
    lines = [(rec["epoch_ms"], capture_line(rec, service="ferry-predict", request_id="r")) for rec in records]
    return encode_subscription_event("/aws/lambda/ferry-predict", "s", lines)


def test_the_handler_fails_the_invocation_when_captures_stay_unwritten(capsys, caplog, capture_app, monkeypatch):
    table, stubber = stubbed("captures")
    monkeypatch.setattr(capture_app, "table", lambda: table)
    monkeypatch.setattr("time.sleep", lambda _: None)
    records = [record(1), record(2)]
    put(stubber, records[0], "ThrottlingException")
    put(stubber, records[0])
    for _ in range(Backoff().attempts):
        put(stubber, records[1], "ProvisionedThroughputExceededException")
    with stubber, pytest.raises(CaptureWriteError):  # Lambda retries the event, then dead-letters it
        capture_app.lambda_handler(event_of(records), LambdaContext(function_name="CaptureFunction", timeout_s=60))
    failure = next(entry for entry in caplog.records if entry.levelname == "ERROR")
    assert "dead-letter queue" in failure.getMessage()
    assert failure.errors == {"ProvisionedThroughputExceededException": 1}
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    metrics = next(line for line in printed if "_aws" in line)
    assert (metrics["CapturesWritten"], metrics["CapturesFailed"], metrics["CaptureWriteRetries"]) == (
        [1.0], [1.0], [float(Backoff().attempts)])
