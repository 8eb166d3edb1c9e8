"""Capture function: CloudWatch Logs subscription events from the predict function -> DynamoDB.

Delivery is at least once; each prediction is written once (a conditional put on its id), and each one newly
written with an API key id counts toward that key's daily usage (FERRY_USAGE_TABLE), which the authorizer reads.
Throttled writes are retried within the invocation; captures still not written make it fail, so that Lambda
retries the event and then sends it to the dead-letter queue (`ferry captures replay` writes it from there).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from ferry.runtime import aws
from ferry.runtime.capture import (
    CaptureEventError,
    CaptureResult,
    CaptureWriteError,
    Retrier,
    capture_records,
    decode_subscription_event,
    write_captures,
)
from ferry.runtime.constants import ENV_CAPTURE_TABLE
from ferry.runtime.settings import Settings

SERVICE = "ferry-capture"
logger = Logger(service=SERVICE)
metrics = Metrics(namespace="Ferry", service=SERVICE)
settings = Settings.from_env()


def table() -> Any:
    return aws.table(settings.capture_table, ENV_CAPTURE_TABLE)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    try:
        payload = decode_subscription_event(event)
    except CaptureEventError as error:
        logger.error("dropped an event that is not a subscription event", extra={"reason": str(error)})
        metrics.add_metric(name="CaptureEventsRejected", unit=MetricUnit.Count, value=1)
        return {"written": 0, "duplicates": 0, "invalid": 1}
    try:
        result = write_captures(table(), capture_records(payload), settings.capture_ttl_days,
                                aws.table(settings.usage_table), Retrier.within(context.get_remaining_time_in_millis()))
    except CaptureWriteError as error:
        report(error.result)
        logger.error("captures not written: Lambda retries the event, then sends it to the dead-letter queue",
                     extra={"reason": str(error), "errors": dict(error.result.errors)})
        raise
    report(result)
    return {"written": result.written, "duplicates": result.duplicates, "invalid": result.invalid}


def report(result: CaptureResult) -> None:
    metrics.add_metric(name="CapturesWritten", unit=MetricUnit.Count, value=result.written)
    metrics.add_metric(name="CaptureDuplicates", unit=MetricUnit.Count, value=result.duplicates)
    metrics.add_metric(name="CaptureWriteRetries", unit=MetricUnit.Count, value=result.retries)
    metrics.add_metric(name="CapturesFailed", unit=MetricUnit.Count, value=result.failed)
    if result.usage_lost:  # an ADD cannot be retried by redelivery: the counts to add by hand, if need be
        lost = [{"key_id": key_id, "day": day, "predictions": count}
                for (key_id, day), count in result.usage_lost.items()]
        logger.error("usage counts not added", extra={"usage_lost": lost})
        metrics.add_metric(name="UsageCountsLost", unit=MetricUnit.Count, value=sum(result.usage_lost.values()))
    logger.info("captured", extra={"written": result.written, "duplicates": result.duplicates,
                                   "invalid": result.invalid, "failed": result.failed, "retries": result.retries,
                                   "counted_for_keys": sum(result.usage.values())})
