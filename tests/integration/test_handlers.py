"""The handlers called with the recorded events under events/, against an embedded moto server: through the local
stack (each function in its own worker process, as in Lambda), or, for the tests that replace a part of the
handler, with functions/predict/app.py imported in this process as a unit test of the handler would."""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import sys
import time

import pytest

from ferry.local.context import LambdaContext
from ferry.local.stack import LocalStack

from helpers import ROOT, run_ferry

EVENTS = ROOT / "events"


def load_event(name: str, model: str | None = None) -> dict:
    event = json.loads((EVENTS / name).read_text())
    if model is not None:
        old = event["pathParameters"]["model"]
        event = json.loads(json.dumps(event).replace(f"/models/{old}/", f"/models/{model}/"))
        event["pathParameters"]["model"] = model
    return event


@pytest.fixture(scope="module")
def stack(serving_layers):
    with LocalStack(root=ROOT, layers_dir=serving_layers) as running:
        yield running


def test_predict_event(stack):
    response = stack.invoke("PredictFunction", load_event("predict.json", model="tiny-bert"))
    assert response["statusCode"] == 200
    body = json.loads(response["body"])
    assert len(body) == 2 and all(len(item) == 1 for item in body)
    assert len(response["headers"]["x-ferry-prediction-ids"].split(",")) == 2


def test_embed_event(stack):
    response = stack.invoke("PredictFunction", load_event("embed.json"))
    assert response["statusCode"] == 200 and len(json.loads(response["body"])[0]) == 384


def test_bad_parameter_event_is_a_400_in_the_project_shape(stack):
    response = stack.invoke("PredictFunction", load_event("predict-bad-parameter.json", model="tiny-bert"))
    assert response["statusCode"] == 400
    assert json.loads(response["body"]) == {"error": {
        "code": "invalid_request", "message": "unknown parameter 'parameters.temperature'; accepted: top_k, "
        "function_to_apply"}}


def test_base64_body_is_decoded(stack):
    event = load_event("predict.json", model="tiny-bert")
    event["body"] = base64.b64encode(event["body"].encode()).decode()
    event["isBase64Encoded"] = True
    assert stack.invoke("PredictFunction", event)["statusCode"] == 200


def test_oversized_body_is_413(stack, monkeypatch):
    event = load_event("predict.json", model="tiny-bert")
    event["body"] = json.dumps({"inputs": ["x" * 5000] * 1300})  # 6.5 MB
    response = stack.invoke("PredictFunction", event)
    assert response["statusCode"] == 413 and "at most 6291456 are accepted" in response["body"]


# -- bodies that answered 500 with a traceback before: each is a 400 in the API's shape ---------------------------

UNREADABLE_BODIES = [
    ("nested 100,000 deep", '{"inputs": ' + "[" * 100_000 + "]" * 100_000 + "}", False,
     "the body is nested more than 32 levels deep"),
    ("nested 10,000 deep", '{"inputs": ' + "[" * 10_000 + "]" * 10_000 + "}", False,
     "the body is nested more than 32 levels deep"),
    ("nested 40 deep", '{"inputs": ' + "[" * 40 + '"x"' + "]" * 40 + "}", False,
     "the body is nested more than 32 levels deep"),
    ("an integer of 5,000 digits", '{"inputs": "x", "parameters": {"top_k": 1' + "0" * 5000 + "}}", False,
     "the body holds an integer of more than 4300 digits"),
    ("base64 of bytes that are not UTF-8", base64.b64encode(b'{"inputs": "caf\xe9"}').decode(), True,
     "the body is not valid UTF-8 (byte 15 is 0xe9)"),
    ("not base64 at all", "{not base64}", True, "the body is marked base64-encoded but is not valid base64"),
    ("a lone surrogate", '{"inputs": "a\\ud800b"}', False, "inputs holds a lone surrogate (\\ud800) at character 1"),
    ("a lone low surrogate in a list", '{"inputs": ["ok", "\\udc00"]}', False,
     "inputs[1] holds a lone surrogate (\\udc00) at character 0"),
    ("NaN", '{"inputs": "x", "parameters": {"top_k": NaN}}', False, "NaN is not a JSON number"),
]


@pytest.mark.parametrize(("body", "is_base64", "message"), [case[1:] for case in UNREADABLE_BODIES],
                         ids=[case[0] for case in UNREADABLE_BODIES])
def test_unreadable_bodies_are_400_in_the_api_shape(stack, body, is_base64, message):
    event = load_event("predict.json", model="tiny-bert")
    event["body"], event["isBase64Encoded"] = body, is_base64
    response = stack.invoke("PredictFunction", event)
    answer = json.loads(response["body"])
    assert response["statusCode"] == 400, answer
    assert answer["error"]["code"] == "invalid_request" and message in answer["error"]["message"], answer


def test_a_surrogate_pair_is_one_character_not_an_error(stack):
    event = load_event("predict.json", model="tiny-bert")
    event["body"] = '{"inputs": "ok \\ud83d\\ude00"}'
    assert stack.invoke("PredictFunction", event)["statusCode"] == 200


# -- limits at their defaults: exactly at a limit is accepted, one over is 413 naming the limit --------------------

@pytest.mark.parametrize(("inputs", "status", "message"), [
    (["x"] * 64, 200, None),
    (["x"] * 65, 413, "inputs has 65 texts; at most 64 are accepted per request"),
    ("x" * 10_000, 200, None),
    ("x" * 10_001, 413, "inputs has 10001 characters; at most 10000 are accepted per text"),
    (["ok", "x" * 10_000], 200, None),
    (["ok", "x" * 10_001], 413, "inputs[1] has 10001 characters; at most 10000 are accepted per text"),
    ("é" * 10_000, 200, None),  # characters, not bytes: 20,000 bytes of UTF-8
    ("😀" * 10_000, 200, None),  # one character each (UTF-16 would count two)
    ("é" * 10_001, 413, "inputs has 10001 characters"),
], ids=["64 texts", "65 texts", "10000 chars", "10001 chars", "10000 in a list", "10001 in a list",
        "10000 two-byte chars", "10000 astral chars", "10001 two-byte chars"])
def test_default_limits_from_both_sides(stack, inputs, status, message):
    event = load_event("predict.json", model="tiny-bert")
    event["body"] = json.dumps({"inputs": inputs}, ensure_ascii=False)
    response = stack.invoke("PredictFunction", event)
    answer = json.loads(response["body"])
    assert response["statusCode"] == status, str(answer)[:300]
    if status == 200:
        assert len(answer) == (len(inputs) if isinstance(inputs, list) else 1)
    else:
        assert answer["error"]["code"] == "payload_too_large" and message in answer["error"]["message"]


# -- /healthz: cheap, public, loads nothing ------------------------------------------------------------------------

@pytest.fixture()
def predict_app(stack, monkeypatch):
    """functions/predict/app.py imported in this process with the environment the stack gives the predict function,
    but nothing preloaded (FERRY_PRELOAD empty): the stack's own predict function runs in a worker process, out of a
    test's reach, and a test that replaces a part of the handler calls this module's handler instead."""
    function = stack.functions["PredictFunction"]
    for name, value in function.environment.items():
        if name in function.variables or name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("FERRY_PRELOAD", "")
    spec = importlib.util.spec_from_file_location("ferry_test_predict_app", function.function.code_uri / "app.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def call(module, event: dict) -> dict:
    """The in-process handler's answer to an event, as the worker would call it."""
    return module.lambda_handler(event, LambdaContext(function_name="PredictFunction", timeout_s=29))


@pytest.fixture()
def fresh_service(predict_app):
    """The in-process predict function's service, which has loaded nothing (FERRY_PRELOAD is empty)."""
    return predict_app.service


def test_healthz_lists_models_without_loading_reading_or_hashing_them(predict_app, fresh_service, monkeypatch):
    from ferry.runtime import manifest, predictor

    def forbidden(*_args, **_kwargs):
        raise AssertionError("/healthz must not load, read or hash a model")

    monkeypatch.setattr(predictor.Predictor, "load", forbidden)
    monkeypatch.setattr(manifest.Manifest, "load", forbidden)
    monkeypatch.setattr(manifest, "sha256_file", forbidden)
    response = call(predict_app, load_event("healthz.json"))
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == {"status": "ok", "models": {"minilm": "available", "tiny-bert": "available"}}
    assert not fresh_service.store.is_loaded("tiny-bert") and not fresh_service.store.is_loaded("minilm")


def test_healthz_says_loading_then_loaded(predict_app, fresh_service, monkeypatch):
    import threading

    from ferry.runtime.predictor import Predictor

    original, release = Predictor.load, threading.Event()

    def slow(path, **kwargs):
        release.wait(timeout=60)
        return original(path, **kwargs)

    monkeypatch.setattr(Predictor, "load", slow)
    thread = fresh_service.store.preload(("tiny-bert",))
    try:
        deadline = time.time() + 10
        while fresh_service.store.status("tiny-bert") != "loading" and time.time() < deadline:
            time.sleep(0.01)
        models = json.loads(call(predict_app, load_event("healthz.json"))["body"])["models"]
        assert models == {"minilm": "available", "tiny-bert": "loading"}
    finally:
        release.set()
        thread.join(timeout=60)
    models = json.loads(call(predict_app, load_event("healthz.json"))["body"])["models"]
    assert models == {"minilm": "available", "tiny-bert": "loaded"}


def test_healthz_is_503_only_without_any_model(predict_app, monkeypatch, tmp_path):
    from ferry.runtime.service import PredictionService
    from ferry.runtime.settings import Settings

    monkeypatch.setattr(predict_app, "service", PredictionService(Settings(models_path=(tmp_path,))))
    response = call(predict_app, load_event("healthz.json"))
    assert response["statusCode"] == 503
    assert json.loads(response["body"])["error"] == {"code": "no_models",
                                                     "message": "no models found in the models path"}


def test_model_readiness_stays_behind_auth_and_loads(stack, predict_app, fresh_service):
    event = load_event("healthz.json")
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/v1/models/tiny-bert"
    event["routeKey"] = event["requestContext"]["routeKey"] = "GET /v1/models/{model}"
    event["pathParameters"] = {"model": "tiny-bert"}
    response = call(predict_app, event)
    assert response["statusCode"] == 200 and json.loads(response["body"])["status"] == "loaded"
    assert fresh_service.store.is_loaded("tiny-bert")
    assert "/v1/models/{model}" in [route.path for route in stack.routes if route.authorized]


# -- OutputMode ----------------------------------------------------------------------------------------------------

def test_output_mode_top_returns_the_best_label_with_a_rounded_score(predict_app, monkeypatch):
    import dataclasses

    from ferry.runtime.constants import TOP_SCORE_DECIMALS
    from ferry.runtime.service import PredictionService

    module = predict_app
    event = load_event("predict.json", model="tiny-bert")
    event["body"] = json.dumps({"inputs": ["what a day", "so bad", "fine"], "parameters": {"top_k": 2}})
    full = json.loads(call(module, copy.deepcopy(event))["body"])
    assert [len(row) for row in full] == [2, 2, 2]
    top_settings = dataclasses.replace(module.settings, output_mode="top")
    monkeypatch.setattr(module, "service", PredictionService(top_settings, module.service.store))
    top = json.loads(call(module, event)["body"])
    assert top == [[{"label": row[0]["label"], "score": round(row[0]["score"], TOP_SCORE_DECIMALS)}] for row in full]
    assert all(len(str(row[0]["score"]).split(".")[-1]) <= TOP_SCORE_DECIMALS for row in top)
    embedded = call(module, load_event("embed.json"))
    assert len(json.loads(embedded["body"])[0]) == 384  # embeddings are not affected


def test_output_mode_setting():
    from ferry.runtime.settings import Settings, SettingsError

    assert Settings.from_env({}).output_mode == "full"
    assert Settings.from_env({"FERRY_OUTPUT_MODE": "TOP"}).output_mode == "top"
    with pytest.raises(SettingsError, match="FERRY_OUTPUT_MODE='best' must be one of full, top"):
        Settings.from_env({"FERRY_OUTPUT_MODE": "best"})


# -- quotas and the key id in captures -----------------------------------------------------------------------------

def with_key(event: dict, **context) -> dict:
    event["requestContext"]["authorizer"] = {"lambda": context}
    return event


@pytest.mark.parametrize("endpoint", ["predict.json", "embed.json"])
def test_a_key_over_its_quota_gets_429_with_retry_after_before_any_prediction(predict_app, monkeypatch, endpoint):
    module = predict_app

    def forbidden(*_args, **_kwargs):
        raise AssertionError("no prediction over the quota")

    monkeypatch.setattr(module.service, "classify", forbidden)
    monkeypatch.setattr(module.service, "embed", forbidden)
    if endpoint == "predict.json":  # the recorded event, as API Gateway delivers it after the authorizer
        event = load_event("predict-over-quota.json", model="tiny-bert")
    else:
        event = with_key(load_event(endpoint), key_id="k-1", quota_exceeded=True, retry_after=3600)
    response = call(module, event)
    assert response["statusCode"] == 429
    assert response["headers"]["Retry-After"] == "3600"
    assert json.loads(response["body"]) == {"error": {"code": "quota_exceeded", "message": (
        "this API key has used its daily quota of predictions; try again after 3600 seconds")}}


def test_without_retry_after_the_quota_answer_counts_to_midnight_utc(stack):
    event = with_key(load_event("predict.json", model="tiny-bert"), key_id="k-1", quota_exceeded=True)
    response = stack.invoke("PredictFunction", event)
    seconds = 86_400 - int(time.time()) % 86_400
    assert response["statusCode"] == 429 and abs(int(response["headers"]["Retry-After"]) - seconds) <= 2
    assert f"try again after {response['headers']['Retry-After']} seconds" in response["body"]


def _captured(stack, ids: list[str]) -> list[dict]:
    table = stack.client("dynamodb")
    deadline, items = time.time() + 10, []
    while time.time() < deadline:
        items = [table.get_item(TableName=stack.table_names["CaptureTable"], Key={"prediction_id": {"S": i}})
                 .get("Item") for i in ids]
        if all(items):
            break
        time.sleep(0.1)
    assert all(items), "captures did not arrive"
    return items


def test_captures_carry_the_key_id_and_a_keyed_text_hash(stack):
    import hashlib
    import hmac

    event = with_key(load_event("predict.json", model="tiny-bert"), key_id="key-0123", quota_exceeded=False)
    response = stack.invoke("PredictFunction", event)
    assert response["statusCode"] == 200
    anonymous = stack.invoke("PredictFunction", load_event("predict.json", model="tiny-bert"))
    keyed_ids = response["headers"]["x-ferry-prediction-ids"].split(",")
    items = _captured(stack, keyed_ids + anonymous["headers"]["x-ferry-prediction-ids"].split(","))
    assert [item.get("key_id") for item in items] == [{"S": "key-0123"}] * 2 + [None] * 2
    secret = stack.functions["PredictFunction"].variables["FERRY_STACK_SECRET"].encode()
    texts = json.loads(event["body"])["inputs"]
    expected = [hmac.new(secret, text.encode(), hashlib.sha256).hexdigest() for text in texts]
    assert [item["text_hmac"]["S"] for item in items[:2]] == expected
    assert all("text_sha256" not in item for item in items)


def test_capture_event_is_idempotent(stack):
    event = load_event("capture.json")
    first = stack.invoke("CaptureFunction", copy.deepcopy(event))
    again = stack.invoke("CaptureFunction", copy.deepcopy(event))
    assert first == {"written": 2, "duplicates": 0, "invalid": 0}
    assert again == {"written": 0, "duplicates": 2, "invalid": 0}
    table = stack.client("dynamodb")
    item = table.get_item(TableName="CaptureTable", Key={"prediction_id": {"S": "0" * 31 + "1"}})["Item"]
    assert item["model_version"] == {"S": "sentiment#0123456789ab"} and item["label"] == {"S": "positive"}


def test_capture_rejects_a_malformed_event_without_failing(stack):
    assert stack.invoke("CaptureFunction", {"awslogs": {"data": "not base64!"}}) == {
        "written": 0, "duplicates": 0, "invalid": 1}


def test_authorizer_event_refuses_an_unknown_key_and_accepts_a_stored_one(stack):
    event = load_event("authorizer.json")
    assert stack.invoke("AuthorizerFunction", event) == {"isAuthorized": False}
    key = "fry_handler-test-key-0123456789"
    identifier = stack.store_api_key(key, "handler-test")
    event["headers"]["authorization"] = event["identitySource"][0] = f"Bearer {key}"
    accepted = stack.invoke("AuthorizerFunction", event)
    assert accepted["isAuthorized"] is True and accepted["context"]["key_id"] == identifier  # (+ quota fields)
    del event["headers"]["authorization"]
    assert stack.invoke("AuthorizerFunction", event) == {"isAuthorized": False}


def test_ferry_invoke_mirrors_sam_local_invoke(serving_layers, tmp_path):
    event = tmp_path / "event.json"
    event.write_text(json.dumps(load_event("predict.json", model="tiny-bert")))
    result = run_ferry("invoke", "predict", "-e", str(event), "--layers-dir", str(serving_layers))
    assert result.returncode == 0, result.stderr[-1500:]
    response = json.loads(result.stdout)
    assert response["statusCode"] == 200
    unknown = run_ferry("invoke", "nothing", "-e", str(event), "--layers-dir", str(serving_layers))
    assert unknown.returncode == 2
    assert "no function 'nothing' in the template; known: AuthorizerFunction, BatchFunction" in unknown.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    broken = run_ferry("invoke", "PredictFunction", "-e", str(bad), "--layers-dir", str(serving_layers))
    assert broken.returncode == 2 and "not valid JSON" in broken.stderr
