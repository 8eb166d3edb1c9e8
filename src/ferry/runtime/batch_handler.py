"""What the batch function does with an event: the files of an S3 notification, one chunk of a large file, or
the join of its chunks (see :mod:`ferry.runtime.batch` and :mod:`ferry.runtime.chunks`).

An object that is no batch input or names no model is refused: logged, counted in ``BatchFailures``, and
answered, since no retry can help. A file that cannot be finished (an S3 error, too little time left, records
unaccounted for) is logged and counted the same way and then raised, after the event's other files are done:
Lambda retries the event (the files already done are skipped) and then sends it to the dead-letter queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ferry.runtime import aws
from ferry.runtime.batch import BatchObject, Deadline, objects_of
from ferry.runtime.capture import print_capture_lines
from ferry.runtime.chunks import Plan, join, run_chunk, run_file, start_state_machine
from ferry.runtime.exceptions import BatchIncompleteError, BatchInputError, FerryRuntimeError
from ferry.runtime.service import Answer, PredictionService
from ferry.runtime.telemetry import Log, MetricSink, add_count


@dataclass(frozen=True)
class Captures:
    """Prints each model call's capture lines as the predict function does: the log group's subscription
    filter delivers them to the capture function. Without the request metrics (latency, batch size): those
    describe API requests, and a batch file's model calls would skew them."""

    service: str
    request_id: str | None
    namespace: str

    def __call__(self, answer: Answer) -> None:
        print_capture_lines(answer.captures, service=self.service, request_id=self.request_id, latency_ms=None,
                            namespace=self.namespace)


def handle_event(event: Mapping[str, Any], context: Any, service: PredictionService, s3: Any, *, logger: Log,
                 metrics: MetricSink, service_name: str) -> dict[str, Any]:
    """The batch function's answer to `event`, predicted with `service` and S3 client `s3`; a large file's
    chunks go to the state machine of ``Settings.batch_state_machine`` when there is one, else run here."""
    if "chunk" in event:  # the state machine's Map: one chunk of a large file
        return _chunk(event, context, service, s3, logger=logger, metrics=metrics, service_name=service_name)
    if "join" in event:  # the state machine's last step
        return _join(event["join"], s3, logger=logger, metrics=metrics)
    try:
        objects = list(objects_of(dict(event)))
    except BatchInputError as error:
        logger.error("not a batch input", extra={"reason": str(error)})
        add_count(metrics, "BatchFailures")
        return {"results": [], "rejected": str(error)}
    deadline = Deadline.of(getattr(context, "get_remaining_time_in_millis", None))
    captures = Captures(service_name, getattr(context, "aws_request_id", None), service.settings.metrics_namespace)
    results: list[dict[str, Any]] = []
    failed: list[Exception] = []
    for obj in objects:
        try:
            results.append(_file(obj, service, s3, deadline, captures, logger=logger, metrics=metrics))
        except BatchIncompleteError as error:
            _failed(obj.key, error, failed, logger=logger, metrics=metrics)
        except FerryRuntimeError as error:  # an unknown model, a CSV without a text column: retrying cannot help
            logger.error("batch refused", extra={"key": obj.key, "reason": str(error)})
            add_count(metrics, "BatchFailures")
            results.append({"key": obj.key, "error": str(error)})
        except Exception as error:  # S3, the network: a retry may succeed
            _failed(obj.key, error, failed, logger=logger, metrics=metrics)
    if failed:
        raise failed[0]
    return {"results": results}


def _file(obj: BatchObject, service: PredictionService, s3: Any, deadline: Deadline, captures: Captures, *,
          logger: Log, metrics: MetricSink) -> dict[str, Any]:
    """One dropped file, predicted (or its chunks started): its summary, logged and counted."""
    state_machine = service.settings.batch_state_machine

    def start(obj: BatchObject, file_plan: Plan) -> str:
        return start_state_machine(s3, aws.client("stepfunctions"), str(state_machine), obj, file_plan)

    result = run_file(s3, obj, service, chunk_bytes=service.settings.batch_chunk_bytes,
                      start=start if state_machine else None, deadline=deadline, capture=captures)
    add_count(metrics, "BatchPredictions", result.predicted)
    add_count(metrics, "BatchLineErrors", result.errors)
    summary: dict[str, Any] = {
        "key": obj.key, "records": result.records, "predicted": result.predicted, "errors": result.errors,
        "skipped": result.skipped, "chunks": result.chunks, "output": obj.output_key, "errors_output": obj.errors_key}
    if result.execution is not None:
        summary["execution"] = result.execution
    logger.info("batch started in chunks" if result.execution else "batch done", extra=summary)
    return summary


def _failed(key: str, error: Exception, failed: list[Exception], *, logger: Log, metrics: MetricSink) -> None:
    logger.exception("batch failed; it is raised for Lambda to retry", extra={"key": key, "reason": str(error)})
    add_count(metrics, "BatchFailures")
    failed.append(error)


def _chunk(item: Mapping[str, Any], context: Any, service: PredictionService, s3: Any, *, logger: Log,
           metrics: MetricSink, service_name: str) -> dict[str, Any]:
    """One chunk; a failure is logged, counted and raised: the state machine retries it, then fails the run."""
    key = str(item.get("object", {}).get("key"))
    captures = Captures(service_name, getattr(context, "aws_request_id", None), service.settings.metrics_namespace)
    try:
        result = run_chunk(s3, dict(item), service,
                           deadline=Deadline.of(getattr(context, "get_remaining_time_in_millis", None)),
                           capture=captures)
    except Exception:
        logger.exception("batch chunk failed", extra={"key": key, "chunk": item.get("chunk")})
        add_count(metrics, "BatchFailures")
        raise
    add_count(metrics, "BatchPredictions", 0 if result.skipped else result.predicted)
    return {"key": key, "records": result.records, "predicted": result.predicted, "errors": result.errors,
            "skipped": result.skipped}


def _join(join_input: Mapping[str, Any], s3: Any, *, logger: Log, metrics: MetricSink) -> dict[str, Any]:
    key = str(join_input.get("object", {}).get("key"))
    try:
        result = join(s3, dict(join_input))
    except Exception:
        logger.exception("batch join failed", extra={"key": key})
        add_count(metrics, "BatchFailures")
        raise
    logger.info("batch done", extra={"key": key, "records": result.records, "predicted": result.predicted,
                                     "errors": result.errors, "chunks": join_input.get("chunks")})
    add_count(metrics, "BatchLineErrors", result.errors)
    return {"key": key, "records": result.records, "predicted": result.predicted, "errors": result.errors}
