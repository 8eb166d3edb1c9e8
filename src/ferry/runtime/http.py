"""The predict function's HTTP API on Powertools' resolver: the request precheck, the answers, the errors.

**The precheck.** What API Gateway lets through but the API refuses before any parsing: an API key without the
route's scope (403), an API key over its daily quota (429), a body not declared as JSON (415), a body over
``Settings.max_body_bytes`` (413), a base64 body that is not base64 of UTF-8 text (400). It must run before
Powertools parses the body, and a resolver middleware cannot: Powertools (3.x) builds each route's stack with its
OpenAPI request validation first, then the resolver's ``app.use(...)`` middlewares, then the route's own
(``Route._build_middleware_stack``), and the validation reads and parses the body. So the precheck is a Powertools
*handler* middleware (:func:`prechecked`, made with ``lambda_handler_decorator``), which runs before ``app.resolve``
and answers a refusal itself.

**The answers.** :class:`HttpApi` is what each route does (the function only declares the routes): it calls the
service, prints the capture lines of a prediction, and answers every error as ``{"error": {"code", "message"}}``
with the status and code the error carries (:func:`ferry.runtime.api.status_of`). The feedback function declares
its route on the same class (:meth:`HttpApi.feedback`), so that both functions answer alike; the generate function's
class (:class:`ferry.runtime.generation_http.GenerationHttpApi`) shares the errors and the precheck through
:class:`ApiBase`. GET /v1/models lists the large model too (:class:`ferry.runtime.generation.GenerationCatalog`).
"""

from __future__ import annotations

import abc
import base64
import binascii
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.middleware_factory import lambda_handler_decorator

from ferry.runtime.api import (
    PREDICTION_IDS_HEADER,
    ApiError,
    RequestModels,
    complete_openapi,
    error_body,
    operations,
    status_of,
    validation_error,
)
from ferry.runtime.capture import print_capture_lines
from ferry.runtime.constants import FEEDBACK_PATH, PREDICTION_PATHS, TEXT_GENERATION
from ferry.runtime.exceptions import (
    FerryRuntimeError,
    ForbiddenError,
    InvalidBodyError,
    PayloadTooLargeError,
    QuotaExceededError,
    UnsupportedMediaTypeError,
)
from ferry.runtime.feedback import FeedbackService
from ferry.runtime.keys import SCOPE_FEEDBACK, SCOPE_PREDICT, allowed, scopes_of, seconds_to_next_utc_day
from ferry.runtime.service import Answer, PredictionService
from ferry.runtime.settings import Settings
from ferry.runtime.telemetry import Log, MetricSink, add_count

if TYPE_CHECKING:  # the predict function's catalog of the large model: imported by whoever makes one
    from ferry.runtime.generation import GenerationCatalog

JSON = "application/json"


# -- what the authorizer said ------------------------------------------------------------------------------------

def authorizer_context(event: Mapping[str, Any]) -> dict[str, Any]:
    """The context the Lambda authorizer returned for this request ({} when no authorizer ran)."""
    context = ((event.get("requestContext") or {}).get("authorizer") or {}).get("lambda")
    return context if isinstance(context, dict) else {}


def key_id_of(event: Mapping[str, Any]) -> str | None:
    """The id of the API key a request was made with, as the authorizer found it; None without one."""
    key_id = authorizer_context(event).get("key_id")
    return key_id if isinstance(key_id, str) and key_id else None


# -- the precheck ------------------------------------------------------------------------------------------------

def precheck(event: Mapping[str, Any], max_body_bytes: int, *, now: float | None = None) -> Mapping[str, Any]:
    """The event to resolve, or the error that refuses it before parsing: an API key without the route's scope,
    an API key over its quota, a wrong content type, an oversized body, a base64 body that is not base64 of
    UTF-8 text.

    A base64 body is decoded to text once, here, so Powertools does not decode it again (and cannot fail to).
    The size counts the bytes of the body (decoded, for base64), never characters. Only POSTs are checked."""
    http = (event.get("requestContext") or {}).get("http") or {}
    if http.get("method") != "POST":
        return event
    _check_scope(event)
    _check_quota(event, time.time() if now is None else now)
    headers = {str(key).lower(): value for key, value in (event.get("headers") or {}).items()}
    content_type = headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != JSON:
        raise UnsupportedMediaTypeError(f"Content-Type must be {JSON}, got {content_type or 'none'!r}")
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidBodyError("the body is marked base64-encoded but is not valid base64") from None
        _check_size(len(raw), max_body_bytes)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise InvalidBodyError(f"the body is not valid UTF-8 (byte {error.start} is 0x{raw[error.start]:02x}); "
                                   "send JSON encoded as UTF-8") from None
        return {**event, "body": text, "isBase64Encoded": False}
    _check_size(len(body) if body.isascii() else len(body.encode("utf-8", "surrogatepass")), max_body_bytes)
    return event


def _check_size(size: int, max_body_bytes: int) -> None:
    if size > max_body_bytes:
        raise PayloadTooLargeError(f"the body has {size} bytes; at most {max_body_bytes} are accepted")


def _check_scope(event: Mapping[str, Any]) -> None:
    """403 for a route the request's API key has no scope for: predictions need "predict", labels "feedback"
    (:func:`ferry.runtime.keys.allowed`; without an authorizer, everything is allowed)."""
    path = str(event.get("rawPath") or "").rstrip("/")
    if path.endswith(FEEDBACK_PATH):
        scope, doing = SCOPE_FEEDBACK, "give feedback"
    elif path.endswith(PREDICTION_PATHS):
        scope, doing = SCOPE_PREDICT, "predict"
    else:
        return
    context = authorizer_context(event)
    if not allowed(context, scope):
        held = ", ".join(scopes_of(context.get("scopes"))) or "none"
        raise ForbiddenError(f"this API key may not {doing}: it lacks the {scope!r} scope (its scopes: {held}); "
                             f"use a key created with the {scope!r} scope")


def _check_quota(event: Mapping[str, Any], now: float) -> None:
    """429 for predictions asked with an API key that the authorizer found over its daily quota."""
    path = str(event.get("rawPath") or "").rstrip("/")
    context = authorizer_context(event)
    if not path.endswith(PREDICTION_PATHS) or context.get("quota_exceeded") is not True:
        return
    retry_after = context.get("retry_after")
    if isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 0:
        retry_after = seconds_to_next_utc_day(now)  # a daily quota: until midnight UTC
    raise QuotaExceededError("this API key has used its daily quota of predictions; try again after "
                             f"{retry_after} seconds", retry_after=retry_after)


def error_response(error: FerryRuntimeError) -> dict[str, Any]:
    """The API Gateway proxy response (payload 2.0) for an error answered without the resolver."""
    status, code = status_of(error)
    return {"statusCode": status, "headers": {"Content-Type": JSON, **error.headers},
            "body": json.dumps(error_body(code, str(error))), "isBase64Encoded": False}


@lambda_handler_decorator
def prechecked(handler: Callable[[Any, Any], Any], event: Any, context: Any, *, settings: Settings,
               on_refused: Callable[[FerryRuntimeError], None] | None = None) -> Any:
    """A Powertools handler middleware: :func:`precheck` the event, then call the handler with it; a refused
    event is answered here (`on_refused` is told first: the function counts it). Apply it innermost, under
    ``metrics.log_metrics``, so that what `on_refused` counts is flushed."""
    try:
        event = precheck(event, settings.max_body_bytes)
    except FerryRuntimeError as error:
        if on_refused is not None:
            on_refused(error)
        return error_response(error)
    return handler(event, context)


# -- the routes --------------------------------------------------------------------------------------------------

class ApiBase(abc.ABC):
    """What every function of the HTTP API answers alike: JSON answers, errors in the API's shape with their
    status and code (:func:`ferry.runtime.api.status_of`), counted by code, and the request precheck
    (:attr:`prechecked`). `settings` are the function's (the body limit, the metrics namespace); `name` is the
    function's service name, in its capture lines.

    Making one registers the error handlers on `app`: request validation (400/413 with one message, worded by
    :meth:`explain`), the runtime's errors (their own status and code), anything else (500), and no route (404)."""

    def __init__(self, app: APIGatewayHttpResolver, settings: Settings, *, name: str, logger: Log,
                 metrics: MetricSink):
        self.app, self.settings = app, settings
        self.name, self.logger, self.metrics = name, logger, metrics
        app.exception_handler(RequestValidationError)(self._invalid_request)
        app.exception_handler(FerryRuntimeError)(self._runtime_error)
        app.exception_handler(Exception)(self._unexpected)
        app.not_found(self._not_found)
        self.prechecked = prechecked(settings=settings, on_refused=lambda error: self.count_error(error.code))

    @abc.abstractmethod
    def explain(self, errors: Sequence[Any]) -> ApiError:
        """One answer a client can act on for the request's validation errors (pydantic's)."""

    # -- answers -----------------------------------------------------------------------------------------------

    def json(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response[str]:
        return Response(status_code=status, content_type=JSON, body=json.dumps(body), headers=headers)

    def count_error(self, code: str) -> None:
        self.metrics.add_dimension("code", code)
        add_count(self.metrics, "Errors")

    def error(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Response[str]:
        self.count_error(code)
        return self.json(status, error_body(code, message), headers)

    # -- errors ------------------------------------------------------------------------------------------------

    def _invalid_request(self, error: RequestValidationError) -> Response[str]:
        answer = self.explain(error.errors())
        return self.error(answer.status, answer.code, answer.message)

    def _runtime_error(self, error: FerryRuntimeError) -> Response[str]:
        status, code = status_of(error)
        if status >= 500:
            self.logger.exception("model unavailable")
        return self.error(status, code, str(error), error.headers)

    def _unexpected(self, error: Exception) -> Response[str]:
        self.logger.exception("unexpected error")
        return self.error(500, "internal_error", "the service failed to answer; the request id is in the logs")

    def _not_found(self, _: Exception) -> Response[str]:
        event = self.app.current_event
        return self.error(404, "not_found", f"no route {event.http_method} {event.path}; see GET /openapi.json")


class HttpApi(ApiBase):
    """What the predict function's routes answer. `service` is called for the service on every request (a
    test may swap the function's); `settings` are the function's (limits in the OpenAPI document, the body
    limit, the metrics namespace); `name` is the function's service name, in its capture lines; `generation`
    is the large model's catalog (FERRY_GENERATE_MODEL), listed beside the layers' models (None: no large model).

    Making one registers the API's error handlers on `app` (:class:`ApiBase`)."""

    def __init__(self, app: APIGatewayHttpResolver, service: Callable[[], PredictionService], models: RequestModels,
                 settings: Settings, *, name: str, logger: Log, metrics: MetricSink,
                 generation: GenerationCatalog | None = None):
        super().__init__(app, settings, name=name, logger=logger, metrics=metrics)
        self.service, self.models, self.generation = service, models, generation
        self._openapi: str | None = None

    def explain(self, errors: Sequence[Any]) -> ApiError:
        return validation_error(errors, self.models.for_path(self.app.current_event.path))

    def predict(self, model: str, request: Any, task: str) -> Response[str]:
        """POST /v1/models/{model}/predict or /embed: `request` (a PredictRequest or EmbedRequest) for the model,
        which must do `task` (the endpoint's); the large model's name is a 400 naming its routes."""
        if self.generation is not None and self.generation.serves(model):
            raise self.generation.wrong_route(model)
        answer = self.service().predict(model, request.inputs, request.options(), task=task,
                                        key_id=key_id_of(self.app.current_event.raw_event))
        return self._answer(answer)

    def feedback(self, receiver: FeedbackService) -> Response[str]:
        """POST /v1/feedback: the body (any JSON: one label or a list, checked label by label by `receiver`)
        recorded with the request's API key; the labels counted by model and outcome in one EMF line per model
        (:meth:`ferry.runtime.feedback.Tally.emf_lines`), a single label's refusal also as an error by code. An
        error of the whole request (a list too long, a body neither an object nor a list) is raised to the error
        handlers, which answer it in the API's shape and count it.

        The route declares no body parameter: Powertools' validation would hand a handler whose body is of any
        type the first item of a list body. The body is parsed here with the resolver's deserializer
        (:func:`ferry.runtime.api.parse_json_body`), JSON errors worded as the validation words them."""
        try:
            body = self.app.current_event.json_body
        except json.JSONDecodeError as exc:
            refusal = validation_error([{"type": "json_invalid", "loc": ("body", exc.pos), "ctx": {"error": exc.msg}}],
                                       self.models.predict)
            return self.error(refusal.status, refusal.code, refusal.message)
        context = self.app.lambda_context
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        answer = receiver.respond(body, key_id=key_id_of(self.app.current_event.raw_event),
                                  remaining_ms=remaining() if callable(remaining) else None)
        answer.tally.print_emf(self.settings.metrics_namespace)
        if answer.error_code is not None:
            self.count_error(answer.error_code)
        return self.json(answer.status, answer.body)

    def list_models(self) -> Response[str]:
        """The layers' models, then the large model (its endpoint's status from a cached DescribeEndpoint)."""
        large = self.generation.summaries() if self.generation is not None else []
        return self.json(200, {"models": [*self.service().models(), *large]})

    def describe_model(self, model: str) -> Response[str]:
        if self.generation is not None and self.generation.serves(model):
            return self.json(200, self.generation.describe(model))
        return self.json(200, self.service().describe(model))

    def healthz(self) -> Response[str]:
        return self.json(200, self.service().health())

    def openapi(self) -> Response[str]:
        """The document, made once per container: Powertools' (from the request models), completed by
        :func:`ferry.runtime.api.complete_openapi`, with the generate function's two routes when this stack has a
        large model."""
        if self._openapi is None:
            document = json.loads(self.app.get_openapi_json_schema(
                title="Ferry", version="1", summary="Transformer models on AWS serverless"))
            try:
                tasks = self.service().tasks()
            except FerryRuntimeError:  # a broken manifest: the document names no models rather than failing
                tasks = {}
            large = self.generation.model if self.generation is not None else None
            if large is not None:  # GET /v1/models/{model} describes it too
                tasks = {**tasks, large: TEXT_GENERATION}
            described = operations(tasks)
            if large is not None:
                from ferry.runtime.generation import generation_models, generation_operations  # made the catalog

                described.update(generation_operations(large, generation_models(self.settings)))
            self._openapi = json.dumps(complete_openapi(document, described, self.settings))
        return Response(status_code=200, content_type=JSON, body=self._openapi)

    # -- answers -----------------------------------------------------------------------------------------------

    def _answer(self, answer: Answer) -> Response[str]:
        # One log line per prediction, written at once: the capture record, EMF counting it by label, and on the
        # first line the request's latency and batch size (ferry.runtime.emf says why not through Metrics).
        context = self.app.lambda_context
        print_capture_lines(answer.captures, service=self.name,
                            request_id=context.aws_request_id if context else None, latency_ms=answer.latency_ms,
                            namespace=self.settings.metrics_namespace)
        return self.json(200, answer.payload, {PREDICTION_IDS_HEADER: ",".join(answer.prediction_ids)})
