"""Daily quotas: the capture function counts new captures by key and UTC day; the authorizer reads the count."""

from __future__ import annotations

import calendar
import time

import boto3
import pytest
from moto import mock_aws

from ferry.runtime.capture import add_usage, write_captures
from ferry.runtime.keys import (
    authorize,
    new_key,
    seconds_to_next_utc_day,
    store_key,
    usage_expiry,
    usage_of,
    utc_day,
)

NOON = calendar.timegm((2026, 11, 29, 12, 0, 0))  # 12 hours to the next UTC midnight
LATE = calendar.timegm((2026, 11, 29, 23, 59, 59))


def record(number: int, key: str | None, epoch_s: float = NOON) -> dict:
    found = {"prediction_id": f"{number:032x}", "model": "sentiment", "version": "0123456789ab",
             "time": time.strftime("%Y-%m-%dT%H:%M:%S.000+00:00", time.gmtime(epoch_s)),
             "epoch_ms": int(epoch_s * 1000), "label": "positive", "score": 0.9}
    return {**found, "key_id": key} if key else found


@pytest.fixture()
def tables(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        dynamodb = boto3.resource("dynamodb", region_name="us-east-1")
        for name, schema in {"keys": [("key_id", "HASH")], "usage": [("key_id", "HASH"), ("day", "RANGE")],
                             "captures": [("prediction_id", "HASH")]}.items():
            dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                                  KeySchema=[{"AttributeName": a, "KeyType": k} for a, k in schema],
                                  AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a, _ in schema])
        yield dynamodb.Table("keys"), dynamodb.Table("usage"), dynamodb.Table("captures")


def test_utc_days_and_the_time_to_the_next_one():
    assert utc_day(NOON) == "2026-11-29" and utc_day(LATE + 1) == "2026-11-30"
    assert seconds_to_next_utc_day(NOON) == 12 * 3600 and seconds_to_next_utc_day(LATE) == 1
    assert usage_expiry("2026-11-29", ttl_days=3) == calendar.timegm((2026, 12, 3, 0, 0, 0))


def test_only_new_captures_with_a_key_id_count_once_per_key_and_day(tables):
    _, usage, captures = tables
    batch = [record(1, "a" * 16), record(2, "a" * 16), record(3, "b" * 16), record(4, None),
             record(5, "a" * 16, epoch_s=LATE + 10), {"prediction_id": "bad"}]
    first = write_captures(captures, batch, ttl_days=90, usage_table=usage)
    assert (first.written, first.duplicates, first.invalid) == (5, 0, 1)
    assert dict(first.usage) == {("a" * 16, "2026-11-29"): 2, ("b" * 16, "2026-11-29"): 1,
                                 ("a" * 16, "2026-11-30"): 1}
    again = write_captures(captures, batch, ttl_days=90, usage_table=usage)  # a redelivery
    assert (again.written, again.duplicates) == (0, 5) and not again.usage
    assert usage_of(usage, "a" * 16, "2026-11-29") == 2 and usage_of(usage, "a" * 16, "2026-11-30") == 1
    assert usage_of(usage, "b" * 16, "2026-11-29") == 1 and usage_of(usage, "c" * 16, "2026-11-29") == 0
    item = usage.get_item(Key={"key_id": "a" * 16, "day": "2026-11-29"})["Item"]
    assert item["expires_at"] == usage_expiry("2026-11-29") > NOON + 86_400


def test_a_failed_write_still_counts_what_was_written_before_it(tables):
    _, usage, captures = tables

    class Failing:
        def __init__(self):
            self.calls = 0

        def put_item(self, **arguments):
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("throttled")
            return captures.put_item(**arguments)

    with pytest.raises(RuntimeError):
        write_captures(Failing(), [record(1, "a" * 16), record(2, "a" * 16)], ttl_days=90, usage_table=usage)
    assert usage_of(usage, "a" * 16, "2026-11-29") == 1


def test_the_authorizer_flips_quota_exceeded_once_usage_reaches_the_quota(tables):
    keys, usage, _ = tables
    key = new_key()
    identifier = store_key(keys, key, "client")
    default_quota = 3
    assert authorize(keys, usage, key, default_quota, now=NOON) == {
        "isAuthorized": True, "context": {"key_id": identifier, "scopes": "predict", "quota_exceeded": False}}
    add_usage(usage, {(identifier, "2026-11-29"): 2})
    assert authorize(keys, usage, key, default_quota, now=NOON)["context"]["quota_exceeded"] is False
    add_usage(usage, {(identifier, "2026-11-29"): 1})
    assert authorize(keys, usage, key, default_quota, now=NOON) == {"isAuthorized": True, "context": {
        "key_id": identifier, "scopes": "predict", "quota_exceeded": True, "retry_after": 12 * 3600}}
    assert authorize(keys, usage, key, 0, now=NOON)["context"]["quota_exceeded"] is False  # 0: no quota
    assert authorize(keys, usage, key, default_quota, now=LATE + 1)["context"]["quota_exceeded"] is False  # new day
    assert authorize(keys, usage, key + "x", default_quota, now=NOON) == {"isAuthorized": False}
    assert authorize(keys, usage, None, default_quota, now=NOON) == {"isAuthorized": False}


def test_a_keys_own_quota_beats_the_stacks(tables):
    keys, usage, _ = tables
    small, unlimited = new_key(), new_key()
    small_id, unlimited_id = store_key(keys, small, "small", quota=1), store_key(keys, unlimited, "vip", quota=0)
    add_usage(usage, {(small_id, "2026-11-29"): 1, (unlimited_id, "2026-11-29"): 10**6})
    assert authorize(keys, usage, small, 100, now=NOON)["context"]["quota_exceeded"] is True
    assert authorize(keys, usage, unlimited, 100, now=NOON)["context"]["quota_exceeded"] is False
    assert authorize(keys, None, small, 100, now=NOON)["context"]["quota_exceeded"] is False  # no usage table
