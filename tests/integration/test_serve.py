"""`ferry serve` over real HTTP: the API as clients see it, and captures landing in the embedded DynamoDB."""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from ferry.runtime.ids import PREDICTION_ID_PATTERN

from helpers import ROOT, MetricWindow, Server, free_port, offline_env


@pytest.fixture(scope="module")
def server(serving_layers):
    running = Server(serving_layers)
    yield running
    assert running.stop() == 0


def test_predict_answers_the_inference_api_shape_with_ids(server):
    status, headers, body = server.request("POST", "/v1/models/tiny-bert/predict", {"inputs": "what a lovely day"})
    assert status == 200
    assert len(body) == 1 and {item["label"] for item in body[0]} == {"negative", "positive"}
    assert body[0][0]["score"] >= body[0][1]["score"]
    assert re.fullmatch(PREDICTION_ID_PATTERN, headers["x-ferry-prediction-ids"])
    status, headers, body = server.request("POST", "/v1/models/tiny-bert/predict",
                                           {"inputs": ["good", "bad", "ok"], "parameters": {"top_k": 1}})
    assert status == 200 and [len(item) for item in body] == [1, 1, 1]
    assert len(headers["x-ferry-prediction-ids"].split(",")) == 3


def test_embed_matches_the_runtime(server, minilm_build):
    from ferry.runtime import Predictor

    status, _, body = server.request("POST", "/v1/models/minilm/embed", {"inputs": ["a guitar", "the stock market"]})
    assert status == 200
    expected = Predictor.load(minilm_build[0]).embed(["a guitar", "the stock market"])
    assert np.allclose(np.array(body), expected, atol=1e-5)
    _, _, raw = server.request("POST", "/v1/models/minilm/embed", {"inputs": "a guitar", "normalize": False})
    assert abs(np.linalg.norm(raw[0]) - 1.0) > 0.01


def test_huggingface_inference_client_works_unchanged(server, monkeypatch):
    from huggingface_hub import InferenceClient, constants

    # offline mode makes the client refuse even 127.0.0.1 (STACK.md); the build tests need it on
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    classifier = InferenceClient(model=f"{server.url}/v1/models/tiny-bert/predict", token="unused")
    labels = classifier.text_classification("I love it")
    assert {item.label for item in labels} == {"negative", "positive"}
    assert abs(sum(item.score for item in labels) - 1.0) < 1e-4
    embedder = InferenceClient(model=f"{server.url}/v1/models/minilm/embed", token="unused")
    vector = embedder.feature_extraction("I love it", normalize=True)
    assert vector.shape[-1] == 384 and abs(float(np.linalg.norm(vector)) - 1.0) < 1e-4


BAD_REQUESTS = [
    ("POST", "/v1/models/tiny-bert/predict", None, b'{"inputs": ', 400, "the body is not valid JSON"),
    ("POST", "/v1/models/tiny-bert/predict", {"inputs": 3}, None, 400, "inputs must be a string or a list of strings"),
    ("POST", "/v1/models/tiny-bert/predict", {"inputs": []}, None, 400, "inputs is empty"),
    ("POST", "/v1/models/tiny-bert/predict", {"inputs": ""}, None, 400, "inputs is empty"),
    ("POST", "/v1/models/tiny-bert/predict", {"inputs": ["ok", " "]}, None, 400, "inputs[1] is empty"),
    ("POST", "/v1/models/tiny-bert/predict", {"text": "hi"}, None, 400, "unknown parameter 'text'; accepted: inputs"),
    ("POST", "/v1/models/tiny-bert/predict", {}, None, 400, "inputs is required"),
    ("POST", "/v1/models/tiny-bert/predict", {"inputs": "hi", "parameters": {"temperature": 1}}, None, 400,
     "unknown parameter 'parameters.temperature'; accepted: top_k, function_to_apply"),
    ("POST", "/v1/models/tiny-bert/predict", {"inputs": "hi", "parameters": {"top_k": "2"}}, None, 400,
     "parameters.top_k"),
    ("POST", "/v1/models/tiny-bert/predict", {"inputs": "hi", "parameters": {"function_to_apply": "relu"}}, None,
     400, "parameters.function_to_apply"),
    ("POST", "/v1/models/tiny-bert/predict", {"inputs": ["x"] * 65}, None, 413, "at most 64 are accepted"),
    ("POST", "/v1/models/tiny-bert/predict", {"inputs": "x" * 10001}, None, 413, "at most 10000 are accepted"),
    ("POST", "/v1/models/nope/predict", {"inputs": "hi"}, None, 404, "no model named 'nope'"),
    ("POST", "/v1/models/Bad_Name/predict", {"inputs": "hi"}, None, 404, "is not valid"),
    ("POST", "/v1/models/minilm/predict", {"inputs": "hi"}, None, 400, "is feature-extraction: use /embed"),
    ("POST", "/v1/models/tiny-bert/embed", {"inputs": "hi"}, None, 400, "is text-classification: use /predict"),
    ("POST", "/v1/models/minilm/embed", {"inputs": "word " * 400, "truncate": False}, None, 413, "truncate=true"),
    ("GET", "/v1/models/nope", None, None, 404, "no model named 'nope'"),
    # these four answered 500 with a traceback in the logs
    ("POST", "/v1/models/tiny-bert/predict", None, b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400,
     "the body is nested more than 32 levels deep"),
    ("POST", "/v1/models/tiny-bert/predict", None, b'{"inputs": [' + b"7" * 4301 + b"]}", 400,
     "the body holds an integer of more than 4300 digits"),
    ("POST", "/v1/models/tiny-bert/predict", None, b'{"inputs": "caf\xe9"}', 400,  # Latin-1: base64 in the event
     "the body is not valid UTF-8 (byte 15 is 0xe9)"),
    ("POST", "/v1/models/minilm/embed", None, b'{"inputs": ["fine", "\\ud800"]}', 400,
     "inputs[1] holds a lone surrogate (\\ud800) at character 0"),
]


@pytest.mark.parametrize(("method", "path", "body", "raw", "status", "message"), BAD_REQUESTS)
def test_bad_requests_get_their_4xx_and_a_message(server, method, path, body, raw, status, message):
    code, _, answer = server.request(method, path, body, raw=raw)
    assert code == status, answer
    assert set(answer) == {"error"} and set(answer["error"]) == {"code", "message"}
    assert message in answer["error"]["message"]


def test_wrong_content_type_and_unknown_route(server):
    code, _, answer = server.request("POST", "/v1/models/tiny-bert/predict", raw=b"inputs=hi",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert code == 415 and "Content-Type must be application/json" in answer["error"]["message"]
    code, _, answer = server.request("GET", "/v2/anything")
    assert code == 404 and answer == {"message": "Not Found"}  # API Gateway's own shape


def raw_http(server, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (urllib cannot send a negative Content-Length) and read the answer to the end."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(request)
        response = http.client.HTTPResponse(connection, method=request.split(b" ", 1)[0].decode())
        response.begin()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


@pytest.mark.parametrize("length", ["-1", "abc", "+12", "1e3", "12, 12"])
def test_a_bad_content_length_is_a_gateway_400_without_reading_the_body(server, length):
    request = (b"POST /v1/models/tiny-bert/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: " + length.encode() + b'\r\n\r\n{"inputs": "hi"}')
    status, headers, body = raw_http(server, request)  # before: -1 read to the end of the stream (a hang)
    assert (status, json.loads(body)) == (400, {"message": "Bad Request"})
    assert headers["connection"] == "close"  # the unread body cannot be taken for the next request


def test_an_oversized_content_length_is_a_gateway_413(server):
    request = (b"POST /v1/models/tiny-bert/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: 10485761\r\n\r\n")
    status, _, body = raw_http(server, request)
    assert (status, json.loads(body)) == (413, {"message": "Request Entity Too Large"})


@pytest.mark.parametrize("method", ["TRACE", "PATCH", "OPTIONS", "PUT", "DELETE", "BREW", "HEAD"])
def test_a_method_no_route_has_is_api_gateways_json_404(server, method):
    for path in ("/healthz", "/v1/models/tiny-bert/predict", "/nowhere"):
        status, headers, body = raw_http(server, f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert status == 404 and headers["content-type"] == "application/json", (method, path)
        assert body == (b"" if method == "HEAD" else b'{"message": "Not Found"}')  # HEAD: the headers only


def test_models_health_and_openapi(server):
    code, _, answer = server.request("GET", "/v1/models")
    assert code == 200 and {m["name"] for m in answer["models"]} == {"tiny-bert", "minilm"}
    code, _, answer = server.request("GET", "/v1/models/tiny-bert")
    assert code == 200 and answer["labels"] == ["negative", "positive"] and answer["parity"]["passed"]
    code, _, health = server.request("GET", "/healthz")
    assert code == 200 and health["status"] == "ok" and set(health["models"]) == {"tiny-bert", "minilm"}
    assert set(health["models"].values()) <= {"loaded", "loading", "available"}
    code, _, spec = server.request("GET", "/openapi.json")
    assert code == 200 and "/v1/models/{model}/predict" in spec["paths"]
    schemas = spec["components"]["schemas"]
    assert {"PredictRequest", "EmbedRequest"} <= set(schemas)


def test_every_prediction_is_captured_in_dynamodb(server):
    import boto3

    _, headers, _ = server.request("POST", "/v1/models/tiny-bert/predict", {"inputs": ["capture me", "and me"]})
    ids = headers["x-ferry-prediction-ids"].split(",")
    table = boto3.resource("dynamodb", endpoint_url=server.aws, region_name="us-east-1",
                           aws_access_key_id="x", aws_secret_access_key="x").Table("CaptureTable")
    deadline = time.time() + 10
    items = []
    while time.time() < deadline:
        items = [table.get_item(Key={"prediction_id": i}).get("Item") for i in ids]
        if all(items):
            break
        time.sleep(0.2)
    assert all(items), "captures did not arrive"
    for item in items:
        assert item["model"] == "tiny-bert" and item["label"] in {"negative", "positive"}
        assert item["model_version"].startswith("tiny-bert#") and re.fullmatch(r"[0-9a-f]{64}", item["text_hmac"])
        assert "text_sha256" not in item  # keyed by the stack's secret: no unsalted hash of the text
        assert "text" not in item  # the raw text only when FERRY_CAPTURE_TEXT=true
        assert int(item["expires_at"]) > time.time()


def _cloudwatch(server):
    import boto3

    return boto3.client("cloudwatch", endpoint_url=server.aws, region_name="us-east-1",
                        aws_access_key_id="x", aws_secret_access_key="x")


def test_emf_metrics_reach_the_embedded_cloudwatch(server):
    _, _, described = server.request("GET", "/v1/models/tiny-bert")
    by_model = {"model": "tiny-bert", "version": described["version"]}
    errors = {"service": "ferry-predict", "code": "invalid_request"}
    window = MetricWindow(_cloudwatch(server))  # what this test's two requests count, and nothing earlier tests did
    sent = time.monotonic()
    status, _, body = server.request("POST", "/v1/models/tiny-bert/predict",
                                     {"inputs": ["what a great day", "this is awful", "fine", "love it"]})
    round_trip_ms = (time.monotonic() - sent) * 1000
    assert status == 200
    assert server.request("POST", "/v1/models/tiny-bert/predict", {"inputs": 3})[0] == 400
    made = {label: sum(1 for row in body if row[0]["label"] == label) for label in ("negative", "positive")}
    expected = {("Predictions", tuple({**by_model, "label": label}.items())): count for label, count in made.items()}
    expected |= {("BatchSize", tuple(by_model.items())): 4, ("Errors", tuple(errors.items())): 1}
    # one count per prediction by the label it got, and the request's batch size, from the capture lines' EMF;
    # the 400 counted once by its code, through Powertools Metrics
    assert window.await_totals(expected) == expected
    latency, requests = window.statistics("Latency", by_model)
    assert requests == 1 and 0 < latency <= round_trip_ms  # the one request's, measured inside what the client saw
    assert window.statistics("BatchSize", by_model) == (4, 1)
    assert window.statistics("Errors", errors) == (1, 1)


def test_api_key_goes_through_the_lambda_authorizer(serving_layers):
    key = "fry_local-test-key-0123456789"
    secured = Server(serving_layers, "--api-key", key)
    try:
        code, _, answer = secured.request("POST", "/v1/models/tiny-bert/predict", {"inputs": "hi"})
        assert code == 401 and answer == {"message": "Unauthorized"}  # no header: API Gateway's own 401
        for wrong in ("Bearer fry_not-the-right-key-000000", "Basic " + key, "Bearer short"):
            code, _, answer = secured.request("POST", "/v1/models/tiny-bert/predict", {"inputs": "hi"},
                                              headers={"Authorization": wrong})
            assert code == 403 and answer == {"message": "Forbidden"}, wrong
        code, _, _ = secured.request("POST", "/v1/models/tiny-bert/predict", {"inputs": "hi"},
                                     headers={"Authorization": f"Bearer {key}"})
        assert code == 200
        assert secured.request("GET", "/healthz")[0] == 200  # Auth: NONE in the template
    finally:
        assert secured.stop() == 0


def test_a_short_api_key_is_refused(serving_layers):
    result = subprocess.run([sys.executable, "-m", "ferry.cli", "serve", "--port", str(free_port()),
                             "--layers-dir", str(serving_layers), "--api-key", "short"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, env=offline_env())
    assert result.returncode == 2 and "--api-key: an API key needs at least 16 characters" in result.stderr


def test_ctrl_c_stops_cleanly_and_frees_the_port(serving_layers):
    running = Server(serving_layers)
    assert running.request("GET", "/healthz")[0] == 200
    assert running.stop() == 0
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server would; fails while one listens
        probe.bind(("127.0.0.1", running.port))
        probe.listen()
