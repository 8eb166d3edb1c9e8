"""Predict function: POST /v1/models/{model}/predict and /embed, GET /v1/models[/{model}], GET /healthz.

Thin: Powertools parses and validates, ferry.runtime predicts, this module shapes answers and errors.
Each prediction is captured as a structured log record (off the request path: a CloudWatch Logs
subscription delivers them to the capture function).
"""

# No `from __future__ import annotations` here: Powertools reads the route signatures' annotations at run time.
import base64
import json
import os
import sys
import warnings
from typing import Annotated, Any

from ferry.runtime.service import Answer, PredictionService
from ferry.runtime.settings import Settings

# Models load on first use and stay for the container's life; those FERRY_PRELOAD names start loading now, in
# a background thread, so that they load while Powertools and pydantic import below (the load releases the GIL).
settings = Settings.from_env()
service = PredictionService(settings)
service.store.preload(settings.preload)

# E402 (imports after code) is allowed in this file for the lines below; see above.
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.metrics import MetricUnit

from ferry.runtime import FerryRuntimeError, emf
from ferry.runtime.api import (
    EmbedRequest,
    PredictRequest,
    error_body,
    status_of,
    validation_message,
)
from ferry.runtime.capture import capture_lines

SERVICE = "ferry-predict"
logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE, auto_patch=False)  # no AWS calls here: patching boto and requests costs 0.1 s
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or emf.NAMESPACE
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
app = APIGatewayHttpResolver(enable_validation=True)
# A successful request's metrics travel in its capture lines; Metrics only has something for cold starts and errors.
warnings.filterwarnings("ignore", message="No application metrics to publish", module="aws_lambda_powertools")
PREDICTION_IDS_HEADER = "x-ferry-prediction-ids"


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=status, content_type="application/json", body=json.dumps(body), headers=headers)


def _count_error(code: str) -> None:
    metrics.add_dimension("code", code)
    metrics.add_metric(name="Errors", unit=MetricUnit.Count, value=1)


def _error(status: int, code: str, message: str) -> Response:
    _count_error(code)
    return _json(status, error_body(code, message))


def _answer(answer: Answer) -> Response:
    # One log line per prediction, written at once: the capture record, EMF counting it by label, and on the
    # first line the request's latency and batch size (ferry.runtime.emf says why not through Metrics).
    request_id = app.lambda_context.aws_request_id if app.lambda_context else None
    sys.stdout.write(capture_lines(answer.captures, service=SERVICE, request_id=request_id,
                                   latency_ms=answer.latency_ms, namespace=NAMESPACE))
    sys.stdout.flush()
    return _json(200, answer.payload, {PREDICTION_IDS_HEADER: ",".join(answer.prediction_ids)})


@app.post("/v1/models/<model>/predict")
def predict(model: str, request: Annotated[PredictRequest, Body()]):  # no return annotation: Powertools checks it
    parameters = request.parameters
    return _answer(service.classify(
        model, request.inputs,
        top_k=parameters.top_k if parameters else None,
        function_to_apply=parameters.function_to_apply if parameters else None,
    ))


@app.post("/v1/models/<model>/embed")
def embed(model: str, request: Annotated[EmbedRequest, Body()]):  # no return annotation: Powertools checks it
    nested = request.parameters
    normalize = request.normalize if request.normalize is not None else (nested.normalize if nested else None)
    truncate = request.truncate if request.truncate is not None else (nested.truncate if nested else None)
    return _answer(service.embed(model, request.inputs, normalize=normalize,
                                 truncate=True if truncate is None else truncate))


@app.get("/v1/models")
def list_models():  # no return annotation: Powertools checks it
    models = [{**manifest.to_summary(), "status": "loaded" if service.store.is_loaded(name) else "available"}
              for name, manifest in sorted(service.store.available().items())]
    return _json(200, {"models": models})


@app.get("/v1/models/<model>")
def describe_model(model: str):  # no return annotation: Powertools checks it
    predictor = service.store.get(model)
    manifest = predictor.manifest
    details = {key: manifest.extra.get(key) for key in ("quantization", "parity", "training", "source", "arch",
                                                          "created_at", "onnxruntime_version")}
    return _json(200, {**manifest.to_summary(), "status": "loaded", **details})


@app.get("/healthz")
def healthz():  # no return annotation: Powertools checks it
    available = service.store.available()
    for name in available:
        service.store.get(name)
    if not available:
        return _error(503, "no_models", "no models found in the models path")
    return _json(200, {"status": "ok", "models": sorted(available)})


@app.get("/openapi.json")
def openapi():  # no return annotation: Powertools checks it
    return Response(status_code=200, content_type="application/json", body=app.get_openapi_json_schema(
        title="Ferry", version="1", summary="Transformer models on AWS serverless"))


@app.exception_handler(RequestValidationError)
def _invalid_request(error: RequestValidationError) -> Response:
    path = app.current_event.path
    model = EmbedRequest if path.endswith("/embed") else PredictRequest
    return _error(400, "invalid_request", validation_message(error.errors(), model))


@app.exception_handler(FerryRuntimeError)
def _runtime_error(error: FerryRuntimeError) -> Response:
    status, code = status_of(error)
    if status >= 500:
        logger.exception("model unavailable")
    return _error(status, code, str(error))


@app.exception_handler(Exception)
def _unexpected(error: Exception) -> Response:
    logger.exception("unexpected error")
    return _error(500, "internal_error", "the service failed to answer; the request id is in the logs")


@app.not_found
def _not_found(_: Exception) -> Response:
    event = app.current_event
    return _error(404, "not_found", f"no route {event.http_method} {event.path}; see GET /openapi.json")


def precheck(event: dict[str, Any]) -> dict[str, Any] | None:
    """What API Gateway would not refuse but the API does: a wrong content type, an oversized body."""
    http = (event.get("requestContext") or {}).get("http") or {}
    if http.get("method") != "POST":
        return None
    headers = {key.lower(): value for key, value in (event.get("headers") or {}).items()}
    content_type = headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        return _raw(415, "unsupported_media_type",
                    f"Content-Type must be application/json, got {content_type or 'none'!r}")
    body = event.get("body") or ""
    size = len(base64.b64decode(body)) if event.get("isBase64Encoded") else len(body.encode("utf-8"))
    if size > settings.max_body_bytes:
        return _raw(413, "payload_too_large",
                    f"the body has {size} bytes; at most {settings.max_body_bytes} are accepted")
    return None


def _raw(status: int, code: str, message: str) -> dict[str, Any]:
    _count_error(code)
    return {"statusCode": status, "headers": {"Content-Type": "application/json"},
            "body": json.dumps(error_body(code, message)), "isBase64Encoded": False}


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)  # embeddings are large; X-Ray caps a segment at 64 KB
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    rejected = precheck(event)
    if rejected is not None:
        return rejected
    return app.resolve(event, context)
