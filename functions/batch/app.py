"""Batch function: S3 ObjectCreated under input/<model>/ -> predictions JSONL under output/<model>/.

A file larger than FERRY_BATCH_CHUNK_BYTES is cut into chunks (ferry.runtime.chunks): with
FERRY_BATCH_STATE_MACHINE set (in AWS) this function starts that state machine, which invokes it again once per
chunk (``{"chunk": ...}``) and once to join them (``{"join": ...}``); without it (locally) it runs them itself.

An object that is no batch input or names no model is refused: logged, counted in ``BatchFailures``, and
answered, since no retry can help. A file that cannot be finished (an S3 error, too little time left, records
unaccounted for) is logged and counted the same way and then raised, after the event's other files are done:
Lambda retries the event (the files already done are skipped) and then sends it to the dead-letter queue.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from ferry.runtime import aws, emf
from ferry.runtime.batch import BatchIncompleteError, BatchInputError, BatchObject, Deadline, objects_of
from ferry.runtime.capture import capture_lines
from ferry.runtime.chunks import Plan, join, run_chunk, run_file, start_state_machine
from ferry.runtime.exceptions import FerryRuntimeError
from ferry.runtime.service import Answer, PredictionService
from ferry.runtime.settings import Settings

SERVICE = "ferry-batch"
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or emf.NAMESPACE
logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
service = PredictionService(Settings.from_env())


def s3() -> Any:
    return aws.client("s3")


class _Captures:
    """Prints each model call's capture lines as the predict function does: the log group's subscription
    filter delivers them to the capture function. Without the request metrics (latency, batch size): those
    describe API requests, and a batch file's model calls would skew them."""

    def __init__(self, request_id: str | None):
        self.request_id = request_id

    def __call__(self, answer: Answer) -> None:
        sys.stdout.write(capture_lines(answer.captures, service=SERVICE, request_id=self.request_id,
                                       latency_ms=None, namespace=NAMESPACE))
        sys.stdout.flush()


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if "chunk" in event:  # the state machine's Map: one chunk of a large file
        return _chunk(event, context)
    if "join" in event:  # the state machine's last step
        return _join(event["join"])
    try:
        objects = list(objects_of(event))
    except BatchInputError as error:
        logger.error("not a batch input", extra={"reason": str(error)})
        metrics.add_metric(name="BatchFailures", unit=MetricUnit.Count, value=1)
        return {"results": [], "rejected": str(error)}
    deadline = Deadline.of(getattr(context, "get_remaining_time_in_millis", None))
    captures = _Captures(getattr(context, "aws_request_id", None))
    results: list[dict[str, Any]] = []
    failed: list[Exception] = []
    start = _start_state_machine if service.settings.batch_state_machine else None
    for obj in objects:
        try:
            result = run_file(s3(), obj, service, chunk_bytes=service.settings.batch_chunk_bytes, start=start,
                              deadline=deadline, capture=captures)
        except BatchIncompleteError as error:
            _failed(obj.key, error, failed)
            continue
        except FerryRuntimeError as error:  # an unknown model, a CSV without a text column: retrying cannot help
            logger.error("batch refused", extra={"key": obj.key, "reason": str(error)})
            metrics.add_metric(name="BatchFailures", unit=MetricUnit.Count, value=1)
            results.append({"key": obj.key, "error": str(error)})
            continue
        except Exception as error:  # S3, the network: a retry may succeed
            _failed(obj.key, error, failed)
            continue
        metrics.add_metric(name="BatchPredictions", unit=MetricUnit.Count, value=result.predicted)
        metrics.add_metric(name="BatchLineErrors", unit=MetricUnit.Count, value=result.errors)
        summary = {"key": obj.key, "records": result.records, "predicted": result.predicted, "errors": result.errors,
                   "skipped": result.skipped, "chunks": result.chunks, "output": obj.output_key}
        if result.execution is not None:
            summary["execution"] = result.execution
        logger.info("batch started in chunks" if result.execution else "batch done", extra=summary)
        results.append(summary)
    if failed:
        raise failed[0]
    return {"results": results}


def _failed(key: str, error: Exception, failed: list[Exception]) -> None:
    logger.exception("batch failed; it is raised for Lambda to retry", extra={"key": key, "reason": str(error)})
    metrics.add_metric(name="BatchFailures", unit=MetricUnit.Count, value=1)
    failed.append(error)


def _start_state_machine(obj: BatchObject, file_plan: Plan) -> str:
    return start_state_machine(s3(), aws.client("stepfunctions"), str(service.settings.batch_state_machine), obj,
                               file_plan)


def _chunk(item: dict[str, Any], context: Any) -> dict[str, Any]:
    """One chunk; a failure is logged, counted and raised: the state machine retries it, then fails the run."""
    key = str(item.get("object", {}).get("key"))
    try:
        result = run_chunk(s3(), item, service, deadline=Deadline.of(getattr(context, "get_remaining_time_in_millis",
                                                                              None)),
                           capture=_Captures(getattr(context, "aws_request_id", None)))
    except Exception:
        logger.exception("batch chunk failed", extra={"key": key, "chunk": item.get("chunk")})
        metrics.add_metric(name="BatchFailures", unit=MetricUnit.Count, value=1)
        raise
    metrics.add_metric(name="BatchPredictions", unit=MetricUnit.Count, value=0 if result.skipped else result.predicted)
    return {"key": key, "records": result.records, "predicted": result.predicted, "errors": result.errors,
            "skipped": result.skipped}


def _join(join_input: dict[str, Any]) -> dict[str, Any]:
    key = str(join_input.get("object", {}).get("key"))
    try:
        result = join(s3(), join_input)
    except Exception:
        logger.exception("batch join failed", extra={"key": key})
        metrics.add_metric(name="BatchFailures", unit=MetricUnit.Count, value=1)
        raise
    logger.info("batch done", extra={"key": key, "records": result.records, "predicted": result.predicted,
                                     "errors": result.errors, "chunks": join_input.get("chunks")})
    metrics.add_metric(name="BatchLineErrors", unit=MetricUnit.Count, value=result.errors)
    return {"key": key, "records": result.records, "predicted": result.predicted, "errors": result.errors}
