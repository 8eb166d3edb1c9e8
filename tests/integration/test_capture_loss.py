"""No capture lost, locally as in AWS: when the capture function fails on a delivery, the local stack retries it as
Lambda retries an async invocation and then sends the event to the dead-letter queue the template names
(CaptureFunction's DeadLetterQueue); `ferry captures replay` writes it from there once the table is back."""

from __future__ import annotations

import json
import time

import pytest

from ferry.local import template as tpl
from ferry.local.stack import REGION, LocalStack
from ferry.runtime.capture import capture_line, decode_subscription_event
from ferry.runtime.keys import usage_of

from helpers import ROOT, offline_env, run_ferry

NOON_MS = 1_795_953_600_000  # 2026-11-29T12:00:00Z
KEY = "d" * 16


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The template's tables, queues and functions on a moto server; no models are needed here."""
    with LocalStack(root=ROOT, layers_dir=tmp_path_factory.mktemp("no-models")) as running:
        yield running


def record(number: int) -> dict:
    return {"prediction_id": f"{number:032x}", "model": "sentiment", "version": "0123456789ab",
            "time": "2026-11-29T12:00:00.000+00:00", "epoch_ms": NOON_MS, "label": "positive", "score": 0.9,
            "key_id": KEY}


def wait_until(condition, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert condition()


def aws_env(stack) -> dict[str, str]:
    env = {name: value for name, value in offline_env().items() if not name.startswith("AWS_")}
    return {**env, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true"}


def test_the_template_queues_exist_by_logical_id(stack):
    sqs = stack.client("sqs")
    for logical_id in ("CaptureDeadLetterQueue", "BatchDeadLetterQueue"):
        assert sqs.get_queue_url(QueueName=logical_id)["QueueUrl"] == stack.queue_urls[logical_id]


def test_a_failed_delivery_lands_in_the_dead_letter_queue_and_replays_from_there(stack):
    dynamodb, sqs = stack.client("dynamodb"), stack.client("sqs")
    table = stack.table_names["CaptureTable"]
    queue = stack.queue_urls["CaptureDeadLetterQueue"]
    dynamodb.delete_table(TableName=table)  # every put fails (not a condition check): the invocation fails
    lines = [capture_line(record(n), service="ferry-predict", request_id="r") for n in (1, 2, 3)]
    group = stack.functions["PredictFunction"].log_group
    before = stack.delivered
    for line in lines:
        stack.logs.put((group, NOON_MS, line))
    wait_until(lambda: stack.dead_lettered == 3)
    assert stack.delivered == before and stack.logs.lost == 0

    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, VisibilityTimeout=0,
                                   MessageAttributeNames=["All"])["Messages"]
    assert len(messages) == 1  # one event: the three lines of the burst, as Lambda's DLQ keeps the event
    payload = decode_subscription_event(json.loads(messages[0]["Body"]))
    assert [event["message"] for event in payload["logEvents"]] == lines
    assert "ResourceNotFoundException" in messages[0]["MessageAttributes"]["ErrorMessage"]["StringValue"]

    # the delivery thread lives on: with the table back, the next lines are captured as usual
    dynamodb.create_table(**tpl.tables(stack.template)["CaptureTable"])
    later = capture_line(record(4), service="ferry-predict", request_id="r")
    stack.logs.put((group, NOON_MS, later))
    wait_until(lambda: stack.delivered == before + 1)

    arguments = ["captures", "replay", "--queue", "CaptureDeadLetterQueue", "--table", table,
                 "--usage-table", stack.table_names["UsageTable"], "--endpoint-url", stack.endpoint]
    result = run_ferry(*arguments, env=aws_env(stack), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"replayed 1 message of CaptureDeadLetterQueue: 3 captures written to {table}, "
                                     "0 already there, 0 invalid; 3 counted toward their keys' usage")
    items = stack.resource("dynamodb").Table(table)
    for number in (1, 2, 3, 4):
        assert "Item" in items.get_item(Key={"prediction_id": f"{number:032x}"})
    usage = stack.resource("dynamodb").Table(stack.table_names["UsageTable"])
    assert usage_of(usage, KEY, "2026-11-29") == 4  # the 3 replayed and the one delivered, each counted once
    assert "Messages" not in sqs.receive_message(QueueUrl=queue, VisibilityTimeout=0)

    result = run_ferry(*arguments, env=aws_env(stack), timeout=120)  # an empty queue: nothing to do
    assert result.returncode == 0 and result.stdout.startswith("replayed 0 messages"), result.stderr
