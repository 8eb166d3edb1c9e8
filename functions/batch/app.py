"""Batch function: S3 ObjectCreated under input/<model>/ -> predictions JSONL under output/<model>/.

A file larger than FERRY_BATCH_CHUNK_BYTES is cut into chunks (ferry.runtime.chunks): with
FERRY_BATCH_STATE_MACHINE set (in AWS) this function starts that state machine, which invokes it again once per
chunk (``{"chunk": ...}``) and once to join them (``{"join": ...}``); without it (locally) it runs them itself.
What it does with each event, and what it refuses or raises for Lambda to retry: ferry.runtime.batch_handler.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics

import ferry.runtime.predictor  # noqa: F401  onnxruntime and tokenizers, in the init phase (the service loads lazily)
from ferry.runtime import aws
from ferry.runtime.batch_handler import handle_event
from ferry.runtime.service import PredictionService
from ferry.runtime.settings import Settings

SERVICE = "ferry-batch"
settings = Settings.from_env()
logger = Logger(service=SERVICE)
metrics = Metrics(namespace=settings.metrics_namespace, service=SERVICE)
service = PredictionService(settings)


def s3() -> Any:
    return aws.client("s3")


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle_event(event, context, service, s3(), logger=logger, metrics=metrics, service_name=SERVICE)
