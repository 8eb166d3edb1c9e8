"""`ferry captures replay`: the capture dead-letter queue's events written again, idempotently, against moto."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from ferry.cli import main
from ferry.runtime.capture import capture_line, encode_subscription_event
from ferry.runtime.keys import usage_of
from ferry.runtime.replay import replay_dead_letters

ROOT = Path(__file__).resolve().parents[2]
NOON_MS = 1_795_953_600_000  # 2026-11-29T12:00:00Z
KEY = "c" * 16


def record(number: int, key: str | None = None) -> dict:
    found = {"prediction_id": f"{number:032x}", "model": "sentiment", "version": "0123456789ab",
             "time": "2026-11-29T12:00:00.000+00:00", "epoch_ms": NOON_MS, "label": "positive", "score": 0.9}
    return {**found, "key_id": key} if key else found


def event_of(records: list[dict], invalid: int = 0) -> dict:
    """A subscription event of the records' capture lines, and `invalid` records without a model."""
    lines = [(rec["epoch_ms"], capture_line(rec, service="ferry-predict", request_id="r")) for rec in records]
    lines += [(NOON_MS, json.dumps({"capture": {"prediction_id": f"{100 + n:032x}"}})) for n in range(invalid)]
    return encode_subscription_event("/aws/lambda/ferry-predict", "s", lines)


@pytest.fixture()
def aws(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # an empty receive waits wait_s (1 s) before the queue counts as drained; moto holds no message back
    monkeypatch.setitem(replay_dead_letters.__kwdefaults__, "wait_s", 0)
    with mock_aws():
        dynamodb = boto3.resource("dynamodb", region_name="us-east-1")
        for name, schema in {"captures": [("prediction_id", "HASH")],
                             "usage": [("key_id", "HASH"), ("day", "RANGE")]}.items():
            dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                                  KeySchema=[{"AttributeName": a, "KeyType": k} for a, k in schema],
                                  AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a, _ in schema])
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="capture-dlq")["QueueUrl"]
        yield sqs, url, dynamodb


def replay(*extra: str) -> int:
    return main(["captures", "replay", "--queue", "capture-dlq", "--table", "captures", "--region", "us-east-1",
                 *extra])


def bodies(sqs, url: str) -> list[str]:
    """What the queue holds, visible now (this peeks: the messages become visible again at once)."""
    found = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0).get("Messages", [])
    return sorted(message["Body"] for message in found)


def test_replay_writes_the_captures_deletes_their_messages_and_leaves_the_bad_ones(aws, capsys):
    sqs, url, dynamodb = aws
    recorded = (ROOT / "events" / "capture.json").read_text()  # a recorded subscription event: two captures
    sqs.send_message(QueueUrl=url, MessageBody=recorded)
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(event_of([record(7, KEY), record(8, KEY), record(9)])))
    sqs.send_message(QueueUrl=url, MessageBody="not json")
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"Records": []}))
    dynamodb.Table("captures").put_item(Item={"prediction_id": record(9)["prediction_id"]})  # written before
    assert replay("--usage-table", "usage") == 1  # messages are left: not a clean replay
    out, err = capsys.readouterr()
    assert out.strip() == ("replayed 2 messages of capture-dlq: 4 captures written to captures, 1 already there, "
                           "0 invalid; 2 counted toward their keys' usage; 2 messages left in the queue")
    assert err.count("ferry: warning: message ") == 2 and "left in the queue: the message body is not JSON" in err
    assert "Traceback" not in err
    table = dynamodb.Table("captures")
    for number in (1, 2, 7, 8, 9):
        assert "Item" in table.get_item(Key={"prediction_id": f"{number:032x}"})
    assert usage_of(dynamodb.Table("usage"), KEY, "2026-11-29") == 2
    assert bodies(sqs, url) == sorted(["not json", json.dumps({"Records": []})])  # left, and visible again

    assert replay("--usage-table", "usage") == 1  # again: nothing more to write, nothing counted twice
    assert capsys.readouterr().out.startswith("replayed 0 messages of capture-dlq: 0 captures written")
    assert usage_of(dynamodb.Table("usage"), KEY, "2026-11-29") == 2


def test_a_drained_queue_exits_zero(aws, capsys):
    sqs, url, _ = aws
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(event_of([record(1)])))
    assert replay() == 0
    assert capsys.readouterr().out.strip() == ("replayed 1 message of capture-dlq: 1 captures written to captures, "
                                               "0 already there, 0 invalid")
    assert bodies(sqs, url) == []


def test_a_dry_run_writes_and_deletes_nothing(aws, capsys):
    sqs, url, dynamodb = aws
    body = json.dumps(event_of([record(1), record(2)], invalid=1))
    sqs.send_message(QueueUrl=url, MessageBody=body)
    dynamodb.Table("captures").put_item(Item={"prediction_id": record(2)["prediction_id"]})
    assert replay("--dry-run", "--queue", url) == 0
    assert capsys.readouterr().out.strip() == (
        f"dry run: 1 message of {url} to replay: 1 captures missing from captures, 1 already there, 1 invalid; "
        "nothing written or deleted")
    assert "Item" not in dynamodb.Table("captures").get_item(Key={"prediction_id": record(1)["prediction_id"]})
    assert bodies(sqs, url) == [body]


def test_captures_that_cannot_be_written_leave_their_message_in_the_queue(aws, capsys):
    sqs, url, dynamodb = aws
    body = json.dumps(event_of([record(1)]))
    sqs.send_message(QueueUrl=url, MessageBody=body)
    dynamodb.Table("captures").delete()
    assert replay() == 1
    out, err = capsys.readouterr()
    assert "1 captures not written (ResourceNotFoundException x1)" in err and "Traceback" not in err
    assert out.strip().endswith("0 captures written to captures, 0 already there, 0 invalid; "
                                "1 message left in the queue")
    assert bodies(sqs, url) == [body]


@pytest.mark.parametrize(("arguments", "expected"), [
    (["--queue", "no-such-queue"], "ferry: error: no queue no-such-queue in this region/endpoint"),
    (["--dry-run", "--table", "no-such-table"], "ferry: error: cannot replay the captures: no table no-such-table"),
])
def test_what_is_missing_is_one_line_and_a_failure(aws, capsys, arguments, expected):
    sqs, url, _ = aws
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(event_of([record(1)])))
    assert replay(*arguments) == 1
    err = capsys.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1, err
