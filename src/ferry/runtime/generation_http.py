"""The generate function's HTTP API on Powertools' resolver: what its two routes answer, and how a request that
fails validation is worded.

The request precheck (scope, quota, content type, size), the errors in the API's shape and their counting are the
predict function's (:class:`ferry.runtime.http.ApiBase`); each generation is captured as the predictions are, one
structured log line (:func:`ferry.runtime.capture.print_capture_lines`) that the log group's subscription delivers
to the capture function, and its prediction id is in ``x-ferry-prediction-ids``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response

from ferry.runtime.api import PREDICTION_IDS_HEADER, ApiError, validation_error
from ferry.runtime.capture import print_capture_lines
from ferry.runtime.constants import ENV_GENERATE_MAX_NEW_TOKENS
from ferry.runtime.exceptions import InvalidBodyError
from ferry.runtime.generation import ChatRequest, GenerateRequest, GenerationAnswer, GenerationModels, GenerationService
from ferry.runtime.http import ApiBase, key_id_of
from ferry.runtime.settings import Settings
from ferry.runtime.telemetry import Log, MetricSink

TOKEN_FIELDS = frozenset({"max_new_tokens", "max_tokens", "max_completion_tokens"})
DEADLINE_RESERVE_S = 0.5  # kept at the end of an invocation to answer and log: no throttled retry starts in it


def explain(errors: Sequence[Any], model: type[Any], max_new_tokens: int) -> ApiError:
    """The answer to a generation request that fails validation: new tokens over the bound say the bound and why,
    a prompt that is not a string says so; everything else is worded as the predict function words it
    (:func:`ferry.runtime.api.validation_error`: 400 naming the parameter, 413 over a limit)."""
    for error in errors:
        location = [part for part in error.get("loc", ()) if part != "body"]
        kind, where, ctx = error.get("type"), _where(location), error.get("ctx") or {}
        if kind == "less_than_equal" and location and location[-1] in TOKEN_FIELDS:
            return _invalid(f"{where} is {error.get('input')}; at most {max_new_tokens} new tokens are allowed "
                            f"({ENV_GENERATE_MAX_NEW_TOKENS}), so that an answer comes back within API Gateway's "
                            "30 s: ask for fewer")
        if location == ["inputs"] and kind == "string_type":
            return _invalid("inputs must be a string (the prompt)")
        if kind == "too_short" and location == ["messages"]:
            return _invalid("messages is empty: give at least one message")
        if kind in {"too_long", "string_too_long"} and location and location[0] != "inputs" and not (
                location[0] == "messages" and kind == "string_too_long"):  # a parameter's bound: not a size limit
            unit = "items" if kind == "too_long" else "characters"
            return _invalid(f"{where} has too many {unit}; at most {ctx.get('max_length')} are accepted")
    return validation_error(errors, model)


def _invalid(message: str) -> ApiError:
    return ApiError(InvalidBodyError.status, InvalidBodyError.code, message)


def _where(location: Sequence[Any]) -> str:
    """``parameters.stop[0]`` from pydantic's location, without the names it gives a union's members."""
    where = ""
    for part in location:
        if isinstance(part, str) and (part in {"str", "constrained-str"} or part.startswith("list[")):
            continue
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    return where


class GenerationHttpApi(ApiBase):
    """What the generate function's routes answer. `service` is called for the service on every request (a test
    may swap the function's); `models` are the request models with the function's limits."""

    def __init__(self, app: APIGatewayHttpResolver, service: Callable[[], GenerationService],
                 models: GenerationModels, settings: Settings, *, name: str, logger: Log, metrics: MetricSink):
        super().__init__(app, settings, name=name, logger=logger, metrics=metrics)
        self.service, self.models = service, models

    def explain(self, errors: Sequence[Any]) -> ApiError:
        model = self.models.for_path(self.app.current_event.path)
        return explain(errors, model, self.settings.generate_max_new_tokens)

    def generate(self, model: str, request: GenerateRequest) -> Response[str]:
        """POST /v1/models/{model}/generate."""
        self._require_object()
        return self._answer(self.service().generate(model, request, key_id=self._key_id(), deadline=self._deadline()))

    def chat(self, model: str, request: ChatRequest) -> Response[str]:
        """POST /v1/models/{model}/v1/chat/completions."""
        self._require_object()
        return self._answer(self.service().chat(model, request, key_id=self._key_id(), deadline=self._deadline()))

    def _require_object(self) -> None:
        """Powertools validates a list body by its first item: a body of one request in a list is refused here."""
        if not isinstance(self.app.current_event.json_body, dict):
            raise InvalidBodyError("the body must be a JSON object")

    def _key_id(self) -> str | None:
        return key_id_of(self.app.current_event.raw_event)

    def _deadline(self) -> float | None:
        """The invocation's end on :func:`time.monotonic`'s clock, less a reserve; None outside Lambda."""
        remaining = getattr(self.app.lambda_context, "get_remaining_time_in_millis", None)
        if not callable(remaining):
            return None
        return time.monotonic() + float(remaining()) / 1000 - DEADLINE_RESERVE_S

    def _answer(self, answer: GenerationAnswer) -> Response[str]:
        context = self.app.lambda_context
        print_capture_lines([answer.capture], service=self.name,
                            request_id=getattr(context, "aws_request_id", None), latency_ms=answer.latency_ms,
                            namespace=self.settings.metrics_namespace)
        return self.json(200, answer.payload, {PREDICTION_IDS_HEADER: answer.prediction_id})
