"""Captured predictions: from the predict function's log records to DynamoDB, idempotently.

The predict handler logs one structured record per prediction; a CloudWatch Logs subscription filter
delivers those lines (gzip + base64) to the capture function, at least once. Each record is written with a
conditional put on its prediction id, so a redelivered batch changes nothing.

Each record newly written that names the API key it was made with (``key_id``) also counts once toward that
key's predictions of its UTC day in the usage table, which the authorizer reads to enforce daily quotas
(:mod:`ferry.runtime.keys`): one ``ADD`` per key and day per delivery, and none for a redelivered record.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ferry.runtime.constants import CAPTURE_KEY
from ferry.runtime.emf import NAMESPACE, prediction_metrics
from ferry.runtime.exceptions import FerryRuntimeError
from ferry.runtime.keys import USAGE_TTL_DAYS, usage_expiry, utc_day

SECONDS_PER_DAY = 86_400


class CaptureEventError(FerryRuntimeError):
    """A subscription event that is not base64-encoded gzip of CloudWatch Logs JSON."""


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
                  latency_ms: float, namespace: str = NAMESPACE) -> str:
    """One request's capture lines, each ending in a newline; the first carries the request's metrics."""
    return "".join(
        capture_line(record, service=service, request_id=request_id, namespace=namespace,
                     latency_ms=latency_ms if index == 0 else None, batch_size=len(records) if index == 0 else None)
        + "\n"
        for index, record in enumerate(records)
    )


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


@dataclass
class CaptureResult:
    written: int = 0
    duplicates: int = 0
    invalid: int = 0
    usage: Counter[tuple[str, str]] = field(default_factory=Counter)  # (key_id, UTC day) -> records newly written


def write_captures(table: Any, records: Iterable[Mapping[str, Any]], ttl_days: int,
                   usage_table: Any | None = None) -> CaptureResult:
    """Write each record once: a conditional put on prediction_id makes redelivery harmless.

    Records newly written that carry a ``key_id`` are counted by key and UTC day in ``result.usage`` and, with a
    `usage_table`, added to it (:func:`add_usage`) even when a write fails half-way: Lambda then retries the
    delivery, and the records already written come back as duplicates, which count for nothing."""
    from botocore.exceptions import ClientError

    result = CaptureResult()
    try:
        for record in records:
            try:
                item = to_item(record, ttl_days)
            except (KeyError, TypeError, ValueError):
                result.invalid += 1
                continue
            try:
                table.put_item(Item=item, ConditionExpression="attribute_not_exists(prediction_id)")
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
                result.duplicates += 1
                continue
            result.written += 1
            owner = record.get("key_id")
            if isinstance(owner, str) and owner:
                result.usage[(owner, utc_day(int(record["epoch_ms"]) / 1000))] += 1
    finally:
        if usage_table is not None:
            add_usage(usage_table, result.usage)
    return result


def add_usage(usage_table: Any, usage: Mapping[tuple[str, str], int], ttl_days: int = USAGE_TTL_DAYS) -> None:
    """Add predictions to each key's count of a UTC day: one UpdateItem per (key_id, day), and a TTL a few days
    after that day so the table keeps only recent days."""
    for (identifier, day), count in usage.items():
        if count > 0:
            usage_table.update_item(
                Key={"key_id": identifier, "day": day}, UpdateExpression="ADD predictions :n SET expires_at = :e",
                ExpressionAttributeValues={":n": count, ":e": usage_expiry(day, ttl_days)})
