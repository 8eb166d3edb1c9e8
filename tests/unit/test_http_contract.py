"""The predict function's HTTP layer to the letter: the precheck at its bounds (quota, body size, base64, UTF-8),
and every route and error answer of HttpApi over a stand-in service: status, body, headers, the error counted by
its code, what is logged, and the capture lines a prediction prints."""

# No `from __future__ import annotations` here: Powertools reads the route signatures' annotations at run time.
import base64
import copy
import json
import logging
from pathlib import Path
from typing import Annotated, Any

import pytest
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.event_handler.openapi.params import Body

from ferry.runtime.api import parse_json_body, request_models
from ferry.runtime.capture import capture_lines
from ferry.runtime.constants import FEATURE_EXTRACTION, TEXT_CLASSIFICATION
from ferry.runtime.exceptions import (
    FerryRuntimeError,
    InvalidBodyError,
    ModelNotFoundError,
    QuotaExceededError,
)
from ferry.runtime.http import HttpApi, key_id_of, precheck
from ferry.runtime.service import Answer, Options
from ferry.runtime.settings import Settings

EVENTS = Path(__file__).resolve().parents[2] / "events"


def event(name: str = "predict.json", **changes: Any) -> dict[str, Any]:
    loaded = json.loads((EVENTS / name).read_text())
    loaded.update(changes)
    return loaded


def with_key(loaded: dict[str, Any], **context: Any) -> dict[str, Any]:
    loaded["requestContext"]["authorizer"] = {"lambda": context}
    return loaded


def over_quota(**changes: Any) -> dict[str, Any]:
    return with_key(event(**changes), key_id="k", quota_exceeded=True, retry_after=60)


# -- the precheck ---------------------------------------------------------------------------------------------------

def test_the_quota_applies_to_prediction_paths_with_or_without_a_trailing_slash():
    with pytest.raises(QuotaExceededError):
        precheck(over_quota(rawPath="/v1/models/sentiment/predict/"), 10_000)
    with pytest.raises(QuotaExceededError):
        precheck(over_quota(rawPath="/v1/models/minilm/embed"), 10_000)
    for path in ("/v1/models/sentiment/predictX", "/v1/models/sentiment", None):
        loaded = over_quota(rawPath=path)
        assert precheck(loaded, 10_000) is loaded


def test_a_retry_after_of_zero_is_kept_and_a_bad_one_replaced_by_the_time_to_midnight():
    with pytest.raises(QuotaExceededError) as caught:
        precheck(with_key(event(), quota_exceeded=True, retry_after=0), 10_000)
    assert caught.value.retry_after == 0
    assert str(caught.value) == "this API key has used its daily quota of predictions; try again after 0 seconds"
    for bad in (True, "60", 1.5):
        with pytest.raises(QuotaExceededError) as caught:
            precheck(with_key(event(), quota_exceeded=True, retry_after=bad), 10_000, now=86_400.0 - 30)
        assert caught.value.retry_after == 30


def test_only_a_non_empty_string_is_a_key_id():
    assert key_id_of(with_key(event(), key_id="k-1")) == "k-1"
    assert key_id_of(with_key(event(), key_id="")) is None
    assert key_id_of(with_key(event(), key_id=7)) is None


def test_a_post_without_a_body_is_an_empty_body():
    loaded = event(body=None)
    assert precheck(loaded, 0) is loaded
    encoded = precheck(event(body=None, isBase64Encoded=True), 0)
    assert (encoded["body"], encoded["isBase64Encoded"]) == ("", False)


def test_base64_is_checked_strictly_and_utf8_errors_say_what_to_send():
    spaced = base64.b64encode(b'{"inputs": "x"}').decode()
    spaced = spaced[:4] + " " + spaced[4:]
    with pytest.raises(InvalidBodyError) as caught:
        precheck(event(body=spaced, isBase64Encoded=True), 10_000)
    assert str(caught.value) == "the body is marked base64-encoded but is not valid base64"
    with pytest.raises(InvalidBodyError) as caught:
        precheck(event(body=base64.b64encode(b'{"inputs": "\xff"}').decode(), isBase64Encoded=True), 10_000)
    assert str(caught.value) == "the body is not valid UTF-8 (byte 12 is 0xff); send JSON encoded as UTF-8"


# -- the routes -----------------------------------------------------------------------------------------------------

CAPTURE = {"prediction_id": "0" * 32, "model": "sentiment", "version": "v", "time": "2026-11-29T12:00:00+00:00",
           "epoch_ms": 1_795_953_600_000, "label": "positive", "score": 0.9}


class StandIn:
    """What the routes ask of PredictionService; `error` makes predict raise it."""

    def __init__(self) -> None:
        self.error: Exception | None = None
        self.calls: list[tuple[Any, ...]] = []
        self.tasks_error: FerryRuntimeError | None = None

    def predict(self, model: str, inputs: Any, options: Options, *, task: str, key_id: str | None) -> Answer:
        self.calls.append((model, inputs, options, task, key_id))
        if self.error is not None:
            raise self.error
        texts = [inputs] if isinstance(inputs, str) else inputs
        return Answer(payload=[[{"label": "positive", "score": 0.9}]] * len(texts),
                      prediction_ids=[f"{index:032x}" for index in range(len(texts))],
                      captures=[CAPTURE] * len(texts), model=model, version="v", latency_ms=12.5, task=task)

    def models(self) -> list[dict[str, Any]]:
        return [{"name": "sentiment", "status": "available"}]

    def describe(self, model: str) -> dict[str, Any]:
        return {"name": model, "status": "loaded"}

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "models": {"sentiment": "available"}}

    def tasks(self) -> dict[str, str]:
        if self.tasks_error is not None:
            raise self.tasks_error
        return {"sentiment": TEXT_CLASSIFICATION}


class Metrics:
    def __init__(self) -> None:
        self.dimensions: list[tuple[str, str]] = []
        self.counted: list[tuple[str, float]] = []

    def add_dimension(self, name: str, value: str) -> None:
        self.dimensions.append((name, value))

    def add_metric(self, name: str, unit: Any, value: float) -> None:
        self.counted.append((name, value))


class Context:
    aws_request_id = "req-7"


@pytest.fixture()
def function():
    settings = Settings(models_path=(EVENTS,), max_inputs=3, max_input_chars=40, max_body_bytes=400,
                        metrics_namespace="TestNS")
    service, metrics = StandIn(), Metrics()
    app = APIGatewayHttpResolver(enable_validation=True, json_body_deserializer=parse_json_body)
    models = request_models(settings)
    PredictRequest, EmbedRequest = models.predict, models.embed
    api = HttpApi(app, lambda: service, models, settings, name="ferry-predict", logger=logging.getLogger("ferry.test"),
                  metrics=metrics)

    @app.post("/v1/models/<model>/predict")
    def predict(model: str, request: Annotated[PredictRequest, Body()]):
        return api.predict(model, request, TEXT_CLASSIFICATION)

    @app.post("/v1/models/<model>/embed")
    def embed(model: str, request: Annotated[EmbedRequest, Body()]):
        return api.predict(model, request, FEATURE_EXTRACTION)

    @app.get("/v1/models")
    def list_models():
        return api.list_models()

    @app.get("/v1/models/<model>")
    def describe_model(model: str):
        return api.describe_model(model)

    @app.get("/healthz")
    def healthz():
        return api.healthz()

    @app.get("/openapi.json")
    def openapi():
        return api.openapi()

    @api.prechecked
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return app.resolve(event, context)

    def invoke(loaded: dict[str, Any], context: Any = Context()) -> tuple[int, Any, dict[str, Any]]:  # noqa: B008
        response = handler(copy.deepcopy(loaded), context)
        return response["statusCode"], response["body"], response.get("headers") or {}

    invoke.service, invoke.metrics, invoke.api = service, metrics, api  # type: ignore[attr-defined]
    return invoke


def get(path: str) -> dict[str, Any]:
    loaded = event("healthz.json", rawPath=path)
    loaded["requestContext"]["http"]["path"] = path
    return loaded


def test_a_prediction_prints_its_capture_lines_and_answers_its_ids(function, capsys):
    status, body, headers = function(event())
    assert status == 200 and json.loads(body) == [[{"label": "positive", "score": 0.9}]] * 2
    assert headers["Content-Type"] == "application/json"
    assert headers["x-ferry-prediction-ids"] == f"{0:032x},{1:032x}"
    assert capsys.readouterr().out == capture_lines([CAPTURE, CAPTURE], service="ferry-predict", request_id="req-7",
                                                    latency_ms=12.5, namespace="TestNS")


def test_a_prediction_without_a_lambda_context_prints_no_request_id(function, capsys):
    assert function(event(), None)[0] == 200
    assert capsys.readouterr().out == capture_lines([CAPTURE, CAPTURE], service="ferry-predict", request_id=None,
                                                    latency_ms=12.5, namespace="TestNS")


def test_the_read_routes_answer_the_service_s_json(function):
    assert function(get("/v1/models"))[:2] == (200, json.dumps({"models": [{"name": "sentiment",
                                                                             "status": "available"}]}))
    assert function(get("/v1/models/sentiment"))[:2] == (200, json.dumps({"name": "sentiment", "status": "loaded"}))
    status, body, headers = function(get("/healthz"))
    assert (status, json.loads(body), headers["Content-Type"]) == (
        200, {"status": "ok", "models": {"sentiment": "available"}}, "application/json")


def test_the_openapi_document_is_made_once_and_names_the_served_models(function):
    status, body, headers = function(get("/openapi.json"))
    assert status == 200 and headers["Content-Type"] == "application/json"
    document = json.loads(body)
    assert (document["info"]["title"], document["info"]["version"]) == ("Ferry", "1")
    assert document["info"]["summary"] == "Transformer models on AWS serverless"
    predict = document["paths"]["/v1/models/{model}/predict"]["post"]
    assert [p["schema"] for p in predict["parameters"] if p["name"] == "model"] == [
        {"type": "string", "enum": ["sentiment"]}]
    assert document["info"]["description"].startswith("Limits: 3 texts a request, 40 characters a text, 400 bytes")
    function.service.tasks_error = ModelNotFoundError("gone")
    assert function(get("/openapi.json"))[1] == body  # made once per container


def test_a_broken_manifest_leaves_the_document_without_models(function):
    function.service.tasks_error = FerryRuntimeError("a manifest is broken")
    document = json.loads(function(get("/openapi.json"))[1])
    predict = document["paths"]["/v1/models/{model}/predict"]["post"]
    assert next(p["schema"] for p in predict["parameters"] if p["name"] == "model")["pattern"]


def test_an_unknown_parameter_names_the_ones_accepted(function):
    loaded = event(body=json.dumps({"inputs": "x", "topk": 1}))
    status, body, _ = function(loaded)
    assert (status, json.loads(body)) == (400, {"error": {
        "code": "invalid_request", "message": "unknown parameter 'topk'; accepted: inputs, parameters"}})
    assert function.metrics.dimensions == [("code", "invalid_request")]
    assert function.metrics.counted == [("Errors", 1)]


def test_a_runtime_error_keeps_its_status_and_headers_and_a_server_side_one_is_logged(function, caplog):
    function.service.error = QuotaExceededError("over", retry_after=9)
    status, body, headers = function(event())
    assert (status, json.loads(body), headers["Retry-After"]) == (
        429, {"error": {"code": "quota_exceeded", "message": "over"}}, "9")
    assert headers["Content-Type"] == "application/json"
    assert not caplog.records
    function.service.error = FerryRuntimeError("the model failed")
    with caplog.at_level(logging.ERROR, logger="ferry.test"):
        status, body, _ = function(event())
    assert (status, json.loads(body)) == (500, {"error": {"code": "internal_error", "message": "the model failed"}})
    assert [(r.name, r.getMessage(), r.exc_info is not None) for r in caplog.records] == [
        ("ferry.test", "model unavailable", True)]
    assert function.metrics.dimensions == [("code", "quota_exceeded"), ("code", "internal_error")]


def test_an_unexpected_error_is_a_500_that_points_to_the_logs(function, caplog):
    function.service.error = RuntimeError("boom")
    with caplog.at_level(logging.ERROR, logger="ferry.test"):
        status, body, headers = function(event())
    assert (status, json.loads(body)) == (500, {"error": {
        "code": "internal_error", "message": "the service failed to answer; the request id is in the logs"}})
    assert headers["Content-Type"] == "application/json"
    assert [(r.getMessage(), r.exc_info is not None) for r in caplog.records] == [("unexpected error", True)]
    assert function.metrics.dimensions == [("code", "internal_error")]


def test_no_route_is_a_404_naming_the_method_and_path(function):
    status, body, _ = function(get("/nowhere"))
    assert (status, json.loads(body)) == (404, {"error": {
        "code": "not_found", "message": "no route GET /nowhere; see GET /openapi.json"}})
