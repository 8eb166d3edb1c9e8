"""Capture function: CloudWatch Logs subscription events from the predict function -> DynamoDB.

Delivery is at least once; each prediction is written once (a conditional put on its id), and each one newly
written with an API key id counts toward that key's daily usage (FERRY_USAGE_TABLE), which the authorizer reads.
Throttled writes are retried within the invocation; captures still not written make it fail, so that Lambda
retries the event and then sends it to the dead-letter queue (`ferry captures replay` writes it from there).
What it does with each delivery: ferry.runtime.capture.receive.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics

from ferry.runtime import aws
from ferry.runtime.capture import Retrier, receive
from ferry.runtime.settings import Settings

SERVICE = "ferry-capture"
settings = Settings.from_env()
logger = Logger(service=SERVICE)
metrics = Metrics(namespace=settings.metrics_namespace, service=SERVICE)


def table() -> Any:
    return aws.table(settings.required("capture_table"))


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    return receive(event, table, settings.capture_ttl_days, aws.table(settings.usage_table),
                   Retrier.within(context.get_remaining_time_in_millis()), logger=logger, metrics=metrics)
