"""Capture function: CloudWatch Logs subscription events from the predict function -> DynamoDB.

Delivery is at least once; each prediction is written once (a conditional put on its id).
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from ferry.runtime.capture import CaptureEventError, capture_records, decode_subscription_event, write_captures
from ferry.runtime.settings import Settings

SERVICE = "ferry-capture"
logger = Logger(service=SERVICE)
metrics = Metrics(namespace="Ferry", service=SERVICE)
settings = Settings.from_env()
_table: Any = None


def table() -> Any:
    """The capture table, created at first use and reused (one client per container)."""
    global _table
    if _table is None:
        if not settings.capture_table:
            raise RuntimeError("FERRY_CAPTURE_TABLE is not set")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        _table = boto3.resource("dynamodb", region_name=region).Table(settings.capture_table)
    return _table


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    try:
        payload = decode_subscription_event(event)
    except CaptureEventError as error:
        logger.error("dropped an event that is not a subscription event", extra={"reason": str(error)})
        metrics.add_metric(name="CaptureEventsRejected", unit=MetricUnit.Count, value=1)
        return {"written": 0, "duplicates": 0, "invalid": 1}
    result = write_captures(table(), capture_records(payload), settings.capture_ttl_days)
    metrics.add_metric(name="CapturesWritten", unit=MetricUnit.Count, value=result.written)
    metrics.add_metric(name="CaptureDuplicates", unit=MetricUnit.Count, value=result.duplicates)
    logger.info("captured", extra={"written": result.written, "duplicates": result.duplicates,
                                   "invalid": result.invalid})
    return {"written": result.written, "duplicates": result.duplicates, "invalid": result.invalid}
