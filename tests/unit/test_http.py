"""ferry.runtime.http without a model: the request precheck, the Powertools handler middleware that runs it before
the body is parsed, and the routes' answers and errors over a stand-in service."""

# No `from __future__ import annotations` here: Powertools reads the route signatures' annotations at run time.
import base64
import copy
import json
import logging
import time
from typing import Annotated, Any

import pytest
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.event_handler.openapi.params import Body

from ferry.runtime.api import parse_json_body, request_models
from ferry.runtime.constants import FEATURE_EXTRACTION, TEXT_CLASSIFICATION
from ferry.runtime.exceptions import (
    InvalidBodyError,
    ModelNotFoundError,
    NoModelsError,
    PayloadTooLargeError,
    QuotaExceededError,
    UnsupportedMediaTypeError,
)
from ferry.runtime.http import HttpApi, error_response, key_id_of, precheck, prechecked
from ferry.runtime.service import Answer, Options
from ferry.runtime.settings import Settings

from helpers import ROOT


def event(name: str = "predict.json", **changes: Any) -> dict[str, Any]:
    loaded = json.loads((ROOT / "events" / name).read_text())
    loaded.update(changes)
    return loaded


def with_key(loaded: dict[str, Any], **context: Any) -> dict[str, Any]:
    loaded["requestContext"]["authorizer"] = {"lambda": context}
    return loaded


# -- the precheck -------------------------------------------------------------------------------------------------

def test_a_get_and_a_fine_post_pass_untouched():
    get = event("healthz.json")
    assert precheck(get, 10) is get
    post = event()
    assert precheck(post, 10_000) is post


@pytest.mark.parametrize(("headers", "message"), [
    ({"content-type": "text/plain"}, "Content-Type must be application/json, got 'text/plain'"),
    ({}, "Content-Type must be application/json, got 'none'"),
])
def test_a_body_not_declared_json_is_415(headers, message):
    with pytest.raises(UnsupportedMediaTypeError, match=message):
        precheck(event(headers=headers), 10_000)
    assert precheck(event(headers={"Content-Type": "Application/JSON; charset=utf-8"}), 10_000)


def test_the_body_limit_counts_utf8_bytes_and_decoded_base64():
    body = json.dumps({"inputs": "é" * 10}, ensure_ascii=False)
    size = len(body.encode())
    assert precheck(event(body=body), size)
    with pytest.raises(PayloadTooLargeError, match=f"the body has {size} bytes; at most {size - 1} are accepted"):
        precheck(event(body=body), size - 1)
    encoded = base64.b64encode(body.encode()).decode()
    decoded = precheck(event(body=encoded, isBase64Encoded=True), size)
    assert (decoded["body"], decoded["isBase64Encoded"]) == (body, False)  # decoded once, here


@pytest.mark.parametrize(("body", "message"), [
    ("{not base64}", "the body is marked base64-encoded but is not valid base64"),
    (base64.b64encode(b'{"inputs": "caf\xe9"}').decode(), "the body is not valid UTF-8 (byte 15 is 0xe9)"),
])
def test_base64_that_is_not_utf8_json_is_400(body, message):
    with pytest.raises(InvalidBodyError) as raised:
        precheck(event(body=body, isBase64Encoded=True), 10_000)
    assert str(raised.value).startswith(message)


def test_a_key_over_its_quota_is_429_with_when_to_retry():
    with pytest.raises(QuotaExceededError) as raised:
        precheck(with_key(event(), key_id="k", quota_exceeded=True, retry_after=3600), 10_000)
    assert str(raised.value) == "this API key has used its daily quota of predictions; try again after 3600 seconds"
    assert raised.value.headers == {"Retry-After": "3600"}
    now = 1_000_000.0
    with pytest.raises(QuotaExceededError) as counted:  # no retry_after: until midnight UTC
        precheck(with_key(event(), key_id="k", quota_exceeded=True), 10_000, now=now)
    assert counted.value.retry_after == 86_400 - int(now) % 86_400
    models = with_key(event("models.json"), key_id="k", quota_exceeded=True)
    assert precheck(models, 10) is models  # the quota counts predictions only
    assert key_id_of(with_key(event(), key_id="k-1")) == "k-1" and key_id_of(event()) is None


def test_errors_carry_their_status_code_and_headers_into_the_answer():
    answer = error_response(QuotaExceededError("over", retry_after=5))
    assert answer == {"statusCode": 429, "headers": {"Content-Type": "application/json", "Retry-After": "5"},
                      "body": json.dumps({"error": {"code": "quota_exceeded", "message": "over"}}),
                      "isBase64Encoded": False}
    assert error_response(ModelNotFoundError("no model named 'x'"))["statusCode"] == 404


def test_the_handler_middleware_answers_a_refusal_without_calling_the_handler():
    called, refused = [], []

    @prechecked(settings=Settings(max_body_bytes=10), on_refused=refused.append)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        called.append(event)
        return {"statusCode": 200}

    answer = handler(event(), None)
    assert answer["statusCode"] == 413 and not called and [error.code for error in refused] == ["payload_too_large"]
    fine = event("healthz.json")
    assert handler(fine, None) == {"statusCode": 200} and called == [fine]


# -- the routes, over a stand-in service --------------------------------------------------------------------------

class StandIn:
    """A service without models: what the routes ask of PredictionService."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.calls: list[tuple[Any, ...]] = []

    def predict(self, model: str, inputs: Any, options: Options, *, task: str, key_id: str | None) -> Answer:
        self.calls.append((model, inputs, options, task, key_id))
        if model == "nope":
            raise ModelNotFoundError("no model named 'nope'; available: tiny")
        texts = [inputs] if isinstance(inputs, str) else inputs
        return Answer(payload=[[{"label": "positive", "score": 0.9}]] * len(texts), prediction_ids=["0" * 32] * len(
            texts), captures=[], model=model, version="v", latency_ms=1.0, task=task)

    def models(self) -> list[dict[str, Any]]:
        return [{"name": "tiny", "status": "available"}]

    def describe(self, model: str) -> dict[str, Any]:
        return {"name": model, "status": "loaded"}

    def health(self) -> dict[str, Any]:
        if not self.settings.models_path:
            raise NoModelsError("no models found in the models path")
        return {"status": "ok", "models": {"tiny": "available"}}

    def tasks(self) -> dict[str, str]:
        return {"tiny": TEXT_CLASSIFICATION}


class Metrics:
    def __init__(self) -> None:
        self.counted: list[tuple[str, str | None]] = []
        self.code: str | None = None

    def add_dimension(self, name: str, value: str) -> None:
        self.code = value

    def add_metric(self, name: str, unit: Any, value: float) -> None:
        self.counted.append((name, self.code))


class Context:
    aws_request_id = "r-1"


@pytest.fixture()
def function():
    """A predict function as functions/predict/app.py declares one, over the stand-in service."""
    settings = Settings(models_path=(ROOT,), max_inputs=3, max_input_chars=40, max_body_bytes=400)
    service, metrics = StandIn(settings), Metrics()
    app = APIGatewayHttpResolver(enable_validation=True, json_body_deserializer=parse_json_body)
    models = request_models(settings)
    PredictRequest, EmbedRequest = models.predict, models.embed
    api = HttpApi(app, lambda: service, models, settings, name="ferry-predict", logger=logging.getLogger("test"),
                  metrics=metrics)

    @app.post("/v1/models/<model>/predict")
    def predict(model: str, request: Annotated[PredictRequest, Body()]):
        return api.predict(model, request, TEXT_CLASSIFICATION)

    @app.post("/v1/models/<model>/embed")
    def embed(model: str, request: Annotated[EmbedRequest, Body()]):
        return api.predict(model, request, FEATURE_EXTRACTION)

    @app.get("/healthz")
    def healthz():
        return api.healthz()

    @api.prechecked
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return app.resolve(event, context)

    def invoke(loaded: dict[str, Any]) -> tuple[int, Any, dict[str, Any]]:
        response = handler(copy.deepcopy(loaded), Context())
        return response["statusCode"], json.loads(response["body"]), response.get("headers") or {}

    invoke.service, invoke.metrics, invoke.settings = service, metrics, settings  # type: ignore[attr-defined]
    return invoke


def embed_event(body: dict[str, Any]) -> dict[str, Any]:
    loaded = event("embed.json")
    loaded["body"] = json.dumps(body)
    return loaded


def test_a_prediction_goes_to_the_service_with_its_options_and_key(function, capsys):
    status, body, headers = function(with_key(event(), key_id="k-1", quota_exceeded=False))
    assert status == 200 and len(body) == 2 and headers["x-ferry-prediction-ids"] == ",".join(["0" * 32] * 2)
    model, inputs, options, task, key_id = function.service.calls[-1]
    assert (model, inputs, options, task, key_id) == (
        "sentiment", ["I love how easy this was!", "The update broke everything."], Options(top_k=1),
        TEXT_CLASSIFICATION, "k-1")


@pytest.mark.parametrize(("body", "options"), [
    ({"inputs": "x"}, Options(normalize=None, truncate=True)),
    ({"inputs": "x", "normalize": False}, Options(normalize=False, truncate=True)),
    ({"inputs": "x", "parameters": {"normalize": True, "truncate": False}}, Options(normalize=True, truncate=False)),
    ({"inputs": "x", "truncate": True, "parameters": {"truncate": False}}, Options(truncate=True)),  # top level wins
])
def test_embed_options_come_from_the_top_level_or_else_the_parameters(function, body, options):
    status, _, _ = function(embed_event(body))
    assert status == 200 and function.service.calls[-1][2:4] == (options, FEATURE_EXTRACTION)


def test_the_precheck_runs_before_the_body_is_parsed(function):
    over = with_key(event(body="{not json at all"), key_id="k", quota_exceeded=True, retry_after=7)
    status, body, headers = function(over)
    assert (status, body["error"]["code"], headers["Retry-After"]) == (429, "quota_exceeded", "7")
    status, body, _ = function(event(body="[" * 500))  # over the body limit, and not JSON
    assert (status, body["error"]["code"]) == (413, "payload_too_large")
    assert not function.service.calls
    assert function.metrics.counted == [("Errors", "quota_exceeded"), ("Errors", "payload_too_large")]


def test_errors_are_answered_in_the_api_shape_with_their_own_status(function):
    status, body, _ = function(embed_event({"inputs": ["a", "b", "c", "d"]}))
    assert (status, body) == (413, {"error": {"code": "payload_too_large",
                                              "message": "inputs has 4 texts; at most 3 are accepted per request"}})
    loaded = event(rawPath="/v1/models/nope/predict", pathParameters={"model": "nope"})
    loaded["requestContext"]["http"]["path"] = "/v1/models/nope/predict"
    status, body, _ = function(loaded)
    assert (status, body["error"]["code"]) == (404, "model_not_found")
    assert function(event("healthz.json"))[:2] == (200, {"status": "ok", "models": {"tiny": "available"}})
    function.service.settings = Settings(models_path=())
    status, body, _ = function(event("healthz.json"))
    assert (status, body) == (503, {"error": {"code": "no_models", "message": "no models found in the models path"}})
    missing = event("healthz.json", rawPath="/nowhere")
    missing["requestContext"]["http"]["path"] = "/nowhere"
    status, body, _ = function(missing)
    assert (status, body["error"]["code"]) == (404, "not_found")


def test_the_seconds_to_midnight_are_counted_at_the_request():
    with pytest.raises(QuotaExceededError) as raised:
        precheck(with_key(event(), quota_exceeded=True, retry_after=-1), 10_000)
    assert abs(raised.value.retry_after - (86_400 - int(time.time()) % 86_400)) <= 2
