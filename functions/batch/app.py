"""Batch function: S3 ObjectCreated under input/<model>/ -> predictions JSONL under output/<model>/."""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from ferry.runtime.batch import BatchInputError, objects_of, run_batch
from ferry.runtime.exceptions import FerryRuntimeError
from ferry.runtime.service import PredictionService
from ferry.runtime.settings import Settings

SERVICE = "ferry-batch"
logger = Logger(service=SERVICE)
metrics = Metrics(namespace="Ferry", service=SERVICE)
service = PredictionService(Settings.from_env())
_s3: Any = None


def s3() -> Any:
    global _s3
    if _s3 is None:
        _s3 = boto3.client("s3")
    return _s3


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    results = []
    try:
        objects = list(objects_of(event))
    except BatchInputError as error:
        logger.error("not a batch input", extra={"reason": str(error)})
        metrics.add_metric(name="BatchFailures", unit=MetricUnit.Count, value=1)
        return {"results": [], "rejected": str(error)}
    for obj in objects:
        try:
            result = run_batch(s3(), obj, service)
        except FerryRuntimeError as error:  # an unknown model: say so, retrying cannot help
            logger.error("batch failed", extra={"key": obj.key, "reason": str(error)})
            metrics.add_metric(name="BatchFailures", unit=MetricUnit.Count, value=1)
            results.append({"key": obj.key, "error": str(error)})
            continue
        metrics.add_metric(name="BatchPredictions", unit=MetricUnit.Count, value=result.predicted)
        metrics.add_metric(name="BatchLineErrors", unit=MetricUnit.Count, value=result.errors)
        logger.info("batch done", extra={"key": obj.key, "predicted": result.predicted, "errors": result.errors,
                                         "skipped": result.skipped})
        results.append({"key": obj.key, "predicted": result.predicted, "errors": result.errors,
                        "skipped": result.skipped, "output": obj.output_key})
    return {"results": results}
