"""Predict function: POST /v1/models/{model}/predict and /embed, GET /v1/models[/{model}], GET /healthz.

Thin: Powertools parses and validates, ferry.runtime predicts, this module shapes answers and errors.
Each prediction is captured as a structured log record (off the request path: a CloudWatch Logs
subscription delivers them to the capture function).
"""

# No `from __future__ import annotations` here: Powertools reads the route signatures' annotations at run time.
import base64
import binascii
import functools
import json
import os
import sys
import time
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
    Health,
    Label,
    ModelDetails,
    ModelList,
    OperationDoc,
    complete_openapi,
    error_body,
    parse_json_body,
    request_models,
    status_of,
    validation_error,
)
from ferry.runtime.capture import capture_lines
from ferry.runtime.constants import FEATURE_EXTRACTION, TEXT_CLASSIFICATION
from ferry.runtime.keys import seconds_to_next_utc_day

SERVICE = "ferry-predict"
logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE, auto_patch=False)  # no AWS calls here: patching boto and requests costs 0.1 s
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or emf.NAMESPACE
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
# Bodies are parsed by parse_json_body: json.loads, refusing what would otherwise raise past Powertools (nesting
# past the recursion limit, integers of more than 4,300 digits) with a 400.
app = APIGatewayHttpResolver(enable_validation=True, json_body_deserializer=parse_json_body)
# The request models carry this container's limits (FERRY_MAX_INPUTS, FERRY_MAX_INPUT_CHARS).
models = request_models(settings)
PredictRequest, EmbedRequest = models.predict, models.embed
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


def _authorizer(event: dict[str, Any]) -> dict[str, Any]:
    """The context the Lambda authorizer returned for this request ({} when no authorizer ran)."""
    context = ((event.get("requestContext") or {}).get("authorizer") or {}).get("lambda")
    return context if isinstance(context, dict) else {}


def _key_id() -> str | None:
    key_id = _authorizer(app.current_event.raw_event).get("key_id")
    return key_id if isinstance(key_id, str) and key_id else None


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
        key_id=_key_id(),
    ))


@app.post("/v1/models/<model>/embed")
def embed(model: str, request: Annotated[EmbedRequest, Body()]):  # no return annotation: Powertools checks it
    nested = request.parameters
    normalize = request.normalize if request.normalize is not None else (nested.normalize if nested else None)
    truncate = request.truncate if request.truncate is not None else (nested.truncate if nested else None)
    return _answer(service.embed(model, request.inputs, normalize=normalize,
                                 truncate=True if truncate is None else truncate, key_id=_key_id()))


@app.get("/v1/models")
def list_models():  # no return annotation: Powertools checks it
    found = [{**manifest.to_summary(), "status": service.store.status(name)}
             for name, manifest in sorted(service.store.available().items())]
    return _json(200, {"models": found})


@app.get("/v1/models/<model>")
def describe_model(model: str):  # no return annotation: Powertools checks it
    predictor = service.store.get(model)
    manifest = predictor.manifest
    details = {key: manifest.extra.get(key) for key in ("quantization", "parity", "training", "source", "arch",
                                                          "created_at", "onnxruntime_version")}
    return _json(200, {**manifest.to_summary(), "status": "loaded", **details})


@app.get("/healthz")
def healthz():  # no return annotation: Powertools checks it
    """Liveness, public and cheap: the models found and whether each is loaded; it loads, reads and hashes
    nothing (GET /v1/models/{model}, behind auth, loads a model and says whether it is ready)."""
    names = service.store.names()
    if not names:
        return _error(503, "no_models", "no models found in the models path")
    return _json(200, {"status": "ok", "models": {name: service.store.status(name) for name in names}})


@app.get("/openapi.json")
def openapi():  # no return annotation: Powertools checks it
    return Response(status_code=200, content_type="application/json", body=_openapi_json())


_PREDICTION_IDS = {"x-ferry-prediction-ids": {
    "description": "one prediction id per input, in input order, comma-separated", "required": True,
    "schema": {"type": "string", "pattern": "^[0-9a-f]{32}(,[0-9a-f]{32})*$"}}}
_POST_ERRORS = (400, 404, 413, 415, 503)


@functools.cache
def _openapi_json() -> str:
    """The document, once per container: Powertools' (from the request models), completed by complete_openapi."""
    document = json.loads(app.get_openapi_json_schema(
        title="Ferry", version="1", summary="Transformer models on AWS serverless"))
    try:
        tasks = {name: manifest.task for name, manifest in service.store.available().items()}
    except FerryRuntimeError:  # a broken manifest: the document names no models rather than failing
        tasks = {}
    of_task = {task: tuple(sorted(name for name, kind in tasks.items() if kind == task))
               for task in (TEXT_CLASSIFICATION, FEATURE_EXTRACTION)}
    operations = {
        ("/v1/models/{model}/predict", "post"): OperationDoc(
            ok=list[list[Label]], errors=_POST_ERRORS, ok_headers=_PREDICTION_IDS,
            models=of_task[TEXT_CLASSIFICATION]),
        ("/v1/models/{model}/embed", "post"): OperationDoc(
            ok=list[list[float]], errors=_POST_ERRORS, ok_headers=_PREDICTION_IDS,
            models=of_task[FEATURE_EXTRACTION]),
        ("/v1/models", "get"): OperationDoc(ok=ModelList, errors=(503,)),
        ("/v1/models/{model}", "get"): OperationDoc(ok=ModelDetails, errors=(404, 503),
                                                    models=tuple(sorted(tasks))),
        ("/healthz", "get"): OperationDoc(ok=Health, errors=(503,), protected=False),
        ("/openapi.json", "get"): OperationDoc(ok=dict[str, Any], errors=(), protected=False),
    }
    return json.dumps(complete_openapi(document, operations, settings))


@app.exception_handler(RequestValidationError)
def _invalid_request(error: RequestValidationError) -> Response:
    path = app.current_event.path
    model = EmbedRequest if path.endswith("/embed") else PredictRequest
    answer = validation_error(error.errors(), model)
    return _error(answer.status, answer.code, answer.message)


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


class Refused(Exception):
    """A request precheck answers itself, without Powertools."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        _count_error(code)
        self.response = {"statusCode": status, "headers": {"Content-Type": "application/json", **(headers or {})},
                         "body": json.dumps(error_body(code, message)), "isBase64Encoded": False}


def precheck(event: dict[str, Any]) -> dict[str, Any]:
    """What API Gateway lets through but the API refuses before parsing (raising :class:`Refused`): an API key
    over its quota, a wrong content type, an oversized body, a base64 body that is not base64 of UTF-8 text.

    Returns the event to resolve: a base64 body decoded to text once, here, so Powertools does not decode it
    again (and cannot fail to). The size counts the bytes of the body (decoded, for base64), never characters.
    """
    http = (event.get("requestContext") or {}).get("http") or {}
    if http.get("method") != "POST":
        return event
    _check_quota(event)
    headers = {key.lower(): value for key, value in (event.get("headers") or {}).items()}
    content_type = headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise Refused(415, "unsupported_media_type",
                      f"Content-Type must be application/json, got {content_type or 'none'!r}")
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise Refused(400, "invalid_request", "the body is marked base64-encoded but is not valid base64") from None
        _check_size(len(raw))
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise Refused(400, "invalid_request",
                          f"the body is not valid UTF-8 (byte {error.start} is 0x{raw[error.start]:02x}); "
                          "send JSON encoded as UTF-8") from None
        return {**event, "body": text, "isBase64Encoded": False}
    _check_size(len(body) if body.isascii() else len(body.encode("utf-8", "surrogatepass")))
    return event


def _check_size(size: int) -> None:
    if size > settings.max_body_bytes:
        raise Refused(413, "payload_too_large",
                      f"the body has {size} bytes; at most {settings.max_body_bytes} are accepted")


def _check_quota(event: dict[str, Any]) -> None:
    """429 for predictions asked with an API key that the authorizer found over its daily quota."""
    path = (event.get("rawPath") or "").rstrip("/")
    context = _authorizer(event)
    if not path.endswith(("/predict", "/embed")) or context.get("quota_exceeded") is not True:
        return
    retry_after = context.get("retry_after")
    if isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 0:
        retry_after = seconds_to_next_utc_day(time.time())  # a daily quota: until midnight UTC
    raise Refused(429, "quota_exceeded", "this API key has used its daily quota of predictions; try again after "
                  f"{retry_after} seconds", headers={"Retry-After": str(retry_after)})


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)  # embeddings are large; X-Ray caps a segment at 64 KB
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        event = precheck(event)
    except Refused as refused:
        return refused.response
    return app.resolve(event, context)
