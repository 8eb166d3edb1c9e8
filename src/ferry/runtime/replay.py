"""Replaying the capture dead-letter queue: the deliveries the capture function failed, written again.

Lambda sends an asynchronous event that still fails after its retries to the function's dead-letter queue, the
message body being the event itself: here a CloudWatch Logs subscription event (``{"awslogs": {"data": ...}}``).
:func:`replay_dead_letters` reads those messages, writes their captures exactly as the capture function does (the
conditional put, usage counted for captures newly written) and deletes a message only once all its captures are
in the table. A message that is not a subscription event, or whose captures cannot all be written, is left in
the queue (visible again when the replay ends) and reported; the first write failure ends the replay, since the
next messages would most likely fail the same way.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ferry.runtime.capture import (
    CaptureResult,
    Retrier,
    capture_records,
    decode_subscription_event,
    to_item,
    write_captures,
)
from ferry.runtime.exceptions import CaptureEventError, CaptureWriteError

RECEIVE_BATCH = 10  # the most SQS returns at once
VISIBILITY_S = 300  # a received message stays hidden this long: this replay alone handles it meanwhile


@dataclass
class ReplayResult:
    messages: int = 0  # messages whose captures are all in the table (deleted, unless a dry run)
    written: int = 0  # in a dry run: captures not in the table yet
    duplicates: int = 0  # captures already in the table
    invalid: int = 0  # capture records that cannot be an item
    usage: Counter[tuple[str, str]] = field(default_factory=Counter)
    usage_lost: Counter[tuple[str, str]] = field(default_factory=Counter)
    bad: list[tuple[str, str]] = field(default_factory=list)  # (message id, why): not a subscription event; left
    failed: list[tuple[str, str]] = field(default_factory=list)  # (message id, why): captures not written; left

    @property
    def left(self) -> int:
        """Messages left in the queue."""
        return len(self.bad) + len(self.failed)

    def add(self, captured: CaptureResult) -> None:
        self.written += captured.written
        self.duplicates += captured.duplicates
        self.invalid += captured.invalid
        self.usage.update(captured.usage)
        self.usage_lost.update(captured.usage_lost)


def replay_dead_letters(sqs: Any, queue_url: str, table: Any, ttl_days: int, usage_table: Any | None = None, *,
                        dry_run: bool = False, wait_s: int = 1,
                        retrier: Callable[[], Retrier] = Retrier) -> ReplayResult:
    """Replay every message of the dead-letter queue at `queue_url` into the capture `table` (and its captures'
    usage into `usage_table`). With `dry_run`, nothing is written or deleted: ``written`` counts the captures
    missing from the table. `wait_s` is how long an empty receive waits before the queue counts as drained."""
    result = ReplayResult()
    kept: list[str] = []  # receipt handles of the messages left in the queue
    seen: set[str] = set()
    try:
        while True:
            answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=RECEIVE_BATCH,
                                         WaitTimeSeconds=wait_s, VisibilityTimeout=VISIBILITY_S)
            messages = [message for message in answer.get("Messages", []) if message["MessageId"] not in seen]
            if not messages:
                return result
            for index, message in enumerate(messages):
                seen.add(message["MessageId"])
                if not _replay_one(sqs, queue_url, message, table, ttl_days, usage_table, dry_run, retrier(),
                                   result):
                    kept.append(message["ReceiptHandle"])
                if result.failed:  # this message and those received after it stay in the queue
                    kept.extend(later["ReceiptHandle"] for later in messages[index + 1:])
                    return result
    finally:
        for handle in kept:  # visible again now rather than after VISIBILITY_S: the alarm and the next replay see them
            sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=handle, VisibilityTimeout=0)


def _replay_one(sqs: Any, queue_url: str, message: dict[str, Any], table: Any, ttl_days: int,
                usage_table: Any | None, dry_run: bool, retrier: Retrier, result: ReplayResult) -> bool:
    """Replay one message; whether it was deleted."""
    try:
        records = list(capture_records(decode_subscription_event(_event(message.get("Body", "")))))
    except CaptureEventError as exc:
        result.bad.append((message["MessageId"], str(exc)))
        return False
    if dry_run:
        result.add(_missing(table, records, ttl_days))
        result.messages += 1
        return False
    try:
        captured = write_captures(table, records, ttl_days, usage_table, retrier)
    except CaptureWriteError as exc:
        result.add(exc.result)
        result.failed.append((message["MessageId"], str(exc)))
        return False
    result.add(captured)
    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    result.messages += 1
    return True


def _event(body: str) -> dict[str, Any]:
    try:
        event = json.loads(body)
    except ValueError:
        raise CaptureEventError("the message body is not JSON") from None
    if not isinstance(event, dict):
        raise CaptureEventError("the message body is not a JSON object")
    return event


def _missing(table: Any, records: list[dict[str, Any]], ttl_days: int) -> CaptureResult:
    """What writing `records` would do: captures not in the table count as written, the others as duplicates."""
    found = CaptureResult()
    for record in records:
        try:
            to_item(record, ttl_days)
        except (KeyError, TypeError, ValueError):
            found.invalid += 1
            continue
        if "Item" in table.get_item(Key={"prediction_id": record["prediction_id"]},
                                      ProjectionExpression="prediction_id"):
            found.duplicates += 1
        else:
            found.written += 1
    return found
