"""functions/generate/app.py imported as Lambda imports it and invoked through lambda_handler with API Gateway v2
events (events/generate*.json), its sagemaker-runtime client made by the function itself and answered by the fake
LMI endpoint in process (tests/fake_endpoint.py): the validation table, the translation as the endpoint receives it,
each fault as the client gets it, the capture line; and the predict function's listing of the large model, with
and without FERRY_GENERATE_MODEL (moto answers DescribeEndpoint)."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from ferry.local.context import LambdaContext
from ferry.runtime import endpoint_client
from ferry.runtime.generation import GenerationService, derived_version
from ferry.runtime.ids import PredictionIds

from fake_endpoint import ENDPOINT, FakeEndpoint, attach, detach, model_error, service_error, slow, throttled
from helpers import ROOT

SECRET = "generate-secret"
VERSION = derived_version("smollm2", ENDPOINT)
ENV = {"FERRY_GENERATE_MODEL": "smollm2", "FERRY_GENERATE_ENDPOINT": ENDPOINT, "FERRY_GENERATE_MAX_NEW_TOKENS": "64",
       "FERRY_GENERATE_TIMEOUT_S": "1", "FERRY_MAX_INPUT_CHARS": "200", "FERRY_STACK_SECRET": SECRET,
       "FERRY_CAPTURE_TEXT": "false", "POWERTOOLS_METRICS_NAMESPACE": "TestNS", "AWS_DEFAULT_REGION": "us-east-1",
       "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
       "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": "http://endpoint.invalid"}  # no one resolves it: the fake answers


def load(name: str, module_name: str) -> Any:
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "functions" / name / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def event(name: str, body: Any = None, **context: Any) -> dict[str, Any]:
    loaded = json.loads((ROOT / "events" / name).read_text())
    if body is not None:
        loaded["body"] = body if isinstance(body, str) else json.dumps(body)
    if context:
        loaded["requestContext"]["authorizer"] = {"lambda": context}
    return loaded


def generate_event(body: Any = None, model: str = "smollm2", **context: Any) -> dict[str, Any]:
    loaded = event("generate.json", body, **context)
    loaded["rawPath"] = loaded["requestContext"]["http"]["path"] = f"/v1/models/{model}/generate"
    loaded["pathParameters"] = {"model": model}
    return loaded


def chat_event(body: Any = None, **context: Any) -> dict[str, Any]:
    return event("generate-chat.json", body, **context)


@dataclass
class Function:
    module: Any
    fake: FakeEndpoint
    sent: list[str]
    slept: list[float] = field(default_factory=list)

    def __call__(self, loaded: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        answer = self.module.lambda_handler(copy.deepcopy(loaded), LambdaContext("GenerateFunction"))
        return answer["statusCode"], json.loads(answer["body"]), answer.get("headers") or {}


@pytest.fixture(scope="module")
def loaded_function() -> Iterator[Function]:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("AWS_ENDPOINT_URL", raising=False)
        for name, value in ENV.items():
            patch.setenv(name, value)
        endpoint_client._client.cache_clear()
        module = load("generate", "ferry_generate_app_under_test")
        fake = FakeEndpoint()
        runtime = endpoint_client.runtime_client(1)  # the client the function makes at its first request
        sent = attach(runtime, fake)
        try:
            yield Function(module, fake, sent)
        finally:
            detach(runtime)
            endpoint_client._client.cache_clear()
            sys.modules.pop("ferry_generate_app_under_test", None)


@pytest.fixture()
def function(loaded_function: Function) -> Iterator[Function]:
    """The function with a fresh service (its endpoint client made again at its first request, on the same
    sagemaker-runtime client: the container's), a fake with no faults, and no waiting between throttled tries."""
    function = loaded_function
    module = function.module
    function.fake.faults.clear()
    function.fake.seen.clear()
    function.fake.refused = False
    function.fake.name = ENDPOINT
    function.sent.clear()
    function.slept = []
    module.service = GenerationService(module.settings, logger=module.logger)
    module.service.endpoint.sleep = function.slept.append
    yield function


def capture_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if '"capture"' in line]


# -- the two routes, end to end ---------------------------------------------------------------------------------------

def test_text_generation_answers_tgi_s_shape_with_a_prediction_id_and_a_capture(function, capsys):
    status, body, headers = function(generate_event(key_id="k-1", scopes="predict"))
    assert status == 200
    assert body == [{"generated_text": "Paris is the capital of France .", "details": {
        "finish_reason": "eos_token", "generated_tokens": 7, "seed": None, "prefill": [],
        "tokens": [{"id": index, "text": word, "logprob": -0.25, "special": False}
                   for index, word in enumerate(["Paris", "is", "the", "capital", "of", "France", "."])]}}]
    assert function.fake.seen == [{"inputs": "What is the capital of France? Answer in one sentence.",
                                   "parameters": {"max_new_tokens": 16, "details": True, "stop_sequences": ["\n"]}}]
    prediction_id = headers["x-ferry-prediction-ids"]
    issued = PredictionIds(SECRET).parse(prediction_id)  # the feedback function would take it
    assert (issued.model, issued.version) == ("smollm2", VERSION)
    [line] = capture_lines(capsys.readouterr().out)
    record = line["capture"]
    assert (record["prediction_id"], record["task"], record["route"], record["key_id"]) == (
        prediction_id, "text-generation", "generate", "k-1")
    assert (record["prompt_tokens"], record["generated_tokens"], record["finish_reason"]) == (10, 7, "eos_token")
    assert "text" not in record and "generated_text" not in record and len(record["text_hmac"]) == 64
    assert line["service"] == "ferry-generate" and line["GeneratedTokens"] == 7 and line["Latency"] >= 0
    assert line["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "TestNS"


def test_details_are_stripped_unless_asked_and_the_client_s_nulls_mean_not_given(function):
    nulls = {name: None for name in ("adapter_id", "best_of", "decoder_input_details", "details", "do_sample",
                                     "frequency_penalty", "grammar", "max_new_tokens", "repetition_penalty",
                                     "return_full_text", "seed", "stop", "temperature", "top_k", "top_n_tokens",
                                     "top_p", "truncate", "typical_p", "watermark")}
    status, body, _ = function(generate_event({"inputs": "Capital?", "parameters": nulls, "stream": None}))
    assert (status, body) == (200, [{"generated_text": "Paris is the capital of France ."}])
    assert function.fake.seen[-1] == {"inputs": "Capital?", "parameters": {"max_new_tokens": 64, "details": True}}
    status, body, _ = function(generate_event({"inputs": "Capital?", "parameters": {
        "max_new_tokens": 3, "temperature": 0.5, "stop": ["capital"]}, "stream": False}))
    assert (status, body) == (200, [{"generated_text": "Paris is the"}])
    assert function.fake.seen[-1]["parameters"] == {"max_new_tokens": 3, "details": True, "temperature": 0.5,
                                                    "stop_sequences": ["capital"], "do_sample": True}


def test_a_chat_completion_goes_to_the_endpoint_as_openai_chat(function, capsys):
    status, body, headers = function(chat_event())
    assert status == 200
    assert body["id"] == headers["x-ferry-prediction-ids"] and body["object"] == "chat.completion"
    assert (body["model"], body["choices"][0]["message"], body["choices"][0]["finish_reason"]) == (
        "smollm2", {"role": "assistant", "content": "Paris."}, "stop")
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    assert function.fake.seen == [{"messages": [{"role": "system", "content": "Answer in one sentence."},
                                                {"role": "user", "content": "What is the capital of France?"}],
                                   "max_tokens": 16}]  # no "model": "dummy", no "stream"
    [line] = capture_lines(capsys.readouterr().out)
    assert (line["capture"]["route"], line["capture"]["generated_tokens"]) == ("chat", 2)


def test_captured_text_follows_capture_text(function, capsys, monkeypatch):
    settings = function.module.settings
    monkeypatch.setattr(function.module, "service", GenerationService(
        type(settings)(**{**settings.__dict__, "capture_text": True})))
    function.module.service.endpoint.sleep = function.slept.append
    assert function(generate_event())[0] == 200
    [line] = capture_lines(capsys.readouterr().out)
    assert (line["capture"]["text"], line["capture"]["generated_text"]) == (
        "What is the capital of France? Answer in one sentence.", "Paris is the capital of France .")


# -- the validation table ---------------------------------------------------------------------------------------

PARAMETERS = "max_new_tokens, temperature, top_p, top_k, repetition_penalty, stop, stop_sequences, seed, do_sample"
GENERATE_CASES = [
    # (body, status, code, what the message says)
    ({"inputs": 5}, 400, "invalid_request", "inputs must be a string (the prompt)"),
    ({"inputs": ["a", "b"]}, 400, "invalid_request", "inputs must be a string (the prompt)"),
    ({}, 400, "invalid_request", "inputs is required"),
    ({"inputs": " \n "}, 400, "invalid_request", "inputs is empty (whitespace only)"),
    ({"inputs": "x" * 201}, 413, "payload_too_large", "inputs has 201 characters; at most 200 are accepted"),
    ({"inputs": "x", "parameters": {"max_new_tokens": 65}}, 400, "invalid_request",
     "parameters.max_new_tokens is 65; at most 64 new tokens are allowed (FERRY_GENERATE_MAX_NEW_TOKENS), so that "
     "an answer comes back within API Gateway's 30 s"),
    ({"inputs": "x", "parameters": {"max_new_tokens": 0}}, 400, "invalid_request",
     "parameters.max_new_tokens: Input should be greater than or equal to 1"),
    ({"inputs": "x", "parameters": {"max_new_tokens": "10"}}, 400, "invalid_request",
     "parameters.max_new_tokens: Input should be a valid integer"),
    ({"inputs": "x", "parameters": {"max_new_tokens": True}}, 400, "invalid_request",
     "parameters.max_new_tokens: Input should be a valid integer"),
    ({"inputs": "x", "parameters": {"max_new_tokens": 2.5}}, 400, "invalid_request", "parameters.max_new_tokens"),
    ({"inputs": "x", "parameters": {"temperature": 0}}, 400, "invalid_request",
     "parameters.temperature: Input should be greater than 0"),
    ({"inputs": "x", "parameters": {"temperature": "hot"}}, 400, "invalid_request",
     "parameters.temperature: Input should be a valid number"),
    ({"inputs": "x", "parameters": {"top_p": 1.5}}, 400, "invalid_request",
     "parameters.top_p: Input should be less than or equal to 1"),
    ({"inputs": "x", "parameters": {"top_k": 0}}, 400, "invalid_request", "parameters.top_k: Input should be greater"),
    ({"inputs": "x", "parameters": {"repetition_penalty": -1}}, 400, "invalid_request",
     "parameters.repetition_penalty: Input should be greater than 0"),
    ({"inputs": "x", "parameters": {"stop": "\n"}}, 400, "invalid_request",
     "parameters.stop: Input should be a valid list"),
    ({"inputs": "x", "parameters": {"stop": [""]}}, 400, "invalid_request", "parameters.stop[0] is empty"),
    ({"inputs": "x", "parameters": {"stop": ["."] * 17}}, 400, "invalid_request",
     "parameters.stop has too many items; at most 16 are accepted"),
    ({"inputs": "x", "parameters": {"stop": ["." * 257]}}, 400, "invalid_request",
     "parameters.stop[0] has too many characters; at most 256 are accepted"),
    ({"inputs": "x", "parameters": {"seed": -1}}, 400, "invalid_request", "parameters.seed: Input should be greater"),
    ({"inputs": "x", "parameters": {"seed": 2**63}}, 400, "invalid_request", "parameters.seed: Input should be less"),
    ({"inputs": "x", "parameters": {"do_sample": "yes"}}, 400, "invalid_request",
     "parameters.do_sample: Input should be a valid boolean"),
    ({"inputs": "x", "parameters": {"max_tokens": 5}}, 400, "invalid_request",
     f"unknown parameter 'parameters.max_tokens'; accepted: {PARAMETERS}"),
    ({"inputs": "x", "options": {}}, 400, "invalid_request",
     "unknown parameter 'options'; accepted: inputs, parameters, stream"),
    ({"inputs": "x", "parameters": []}, 400, "invalid_request", "parameters: Input should be"),
    ({"inputs": "x", "stream": True}, 400, "unsupported_parameter",
     "streaming is not supported on this route: API Gateway HTTP APIs cannot stream responses"),
    ({"inputs": "x", "stream": "no"}, 400, "invalid_request", "stream: Input should be a valid boolean"),
    ({"inputs": "x", "parameters": {"grammar": {"type": "json", "value": {}}}}, 400, "unsupported_parameter",
     "not supported by this model's endpoint: parameters.grammar; leave it out (or null)"),
    ({"inputs": "x", "parameters": {"best_of": 2, "adapter_id": "a"}}, 400, "unsupported_parameter",
     "parameters.adapter_id, parameters.best_of; leave them out"),
    ({"inputs": "x", "parameters": {"truncate": 10, "watermark": True}}, 400, "unsupported_parameter",
     "parameters.truncate, parameters.watermark"),
    ([{"inputs": "x"}], 400, "invalid_request", "the body must be a JSON object"),
    ("{nope", 400, "invalid_request", "the body is not valid JSON"),
]


@pytest.mark.parametrize(("body", "status", "code", "message"), GENERATE_CASES,
                         ids=[f"generate-{index}" for index in range(len(GENERATE_CASES))])
def test_a_text_generation_request_is_validated_before_the_endpoint_is_called(function, body, status, code,
                                                                               message):
    answered, answer, _ = function(generate_event(body))
    assert (answered, answer["error"]["code"]) == (status, code), answer
    assert message in answer["error"]["message"]
    assert not function.sent


MESSAGE = {"role": "user", "content": "Capital of France?"}
CHAT_CASES = [
    ({"model": "dummy"}, 400, "invalid_request", "messages is required"),
    ({"messages": []}, 400, "invalid_request", "messages is empty: give at least one message"),
    ({"messages": [{"role": "robot", "content": "x"}]}, 400, "invalid_request",
     "messages[0].role: Input should be 'system', 'user' or 'assistant'"),
    ({"messages": [{"role": "user", "content": 5}]}, 400, "invalid_request",
     "messages[0].content: Input should be a valid string"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 400,
     "invalid_request", "messages[0].content[0]"),
    ({"messages": [{"role": "user"}]}, 400, "invalid_request", "messages[0].content is required"),
    ({"messages": [{"role": "user", "content": "x" * 201}]}, 413, "payload_too_large",
     "messages[0].content has 201 characters; at most 200 are accepted"),
    ({"messages": [{"role": "user", "content": "x" * 150}] * 2}, 413, "payload_too_large",
     "messages have 300 characters in all; at most 200 are accepted"),
    ({"messages": [MESSAGE], "max_tokens": 65}, 400, "invalid_request",
     "max_tokens is 65; at most 64 new tokens are allowed"),
    ({"messages": [MESSAGE], "max_completion_tokens": 100}, 400, "invalid_request",
     "max_completion_tokens is 100; at most 64"),
    ({"messages": [MESSAGE], "temperature": 2.5}, 400, "invalid_request",
     "temperature: Input should be less than or equal to 2"),
    ({"messages": [MESSAGE], "stop": [""]}, 400, "invalid_request", "stop[0] is empty"),
    ({"messages": [MESSAGE], "stream": True}, 400, "unsupported_parameter", "streaming is not supported on this route"),
    ({"messages": [MESSAGE], "n": 2}, 400, "unsupported_parameter", "not supported by this model's endpoint: n;"),
    ({"messages": [MESSAGE], "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "auto"}, 400,
     "unsupported_parameter", "tools, tool_choice"),
    ({"messages": [MESSAGE], "response_format": {"type": "json_object"}}, 400, "unsupported_parameter",
     "response_format"),
    ({"messages": [MESSAGE], "functions": []}, 400, "invalid_request",
     "unknown parameter 'functions'; accepted: model"),
]


@pytest.mark.parametrize(("body", "status", "code", "message"), CHAT_CASES,
                         ids=[f"chat-{index}" for index in range(len(CHAT_CASES))])
def test_a_chat_request_is_validated_before_the_endpoint_is_called(function, body, status, code, message):
    answered, answer, _ = function(chat_event(body))
    assert (answered, answer["error"]["code"]) == (status, code), answer
    assert message in answer["error"]["message"]
    assert not function.sent


def test_what_inference_client_sends_is_accepted(function):
    """The bodies huggingface_hub 0.36 sends (read from its own payload builder, nulls filtered or not)."""
    chat = {"model": "dummy", "max_tokens": 5, "seed": 3, "stop": ["a"], "temperature": 0.1, "top_p": 0.9,
            "stream": False, "messages": [MESSAGE], "frequency_penalty": None, "logit_bias": None, "logprobs": None,
            "n": None, "presence_penalty": None, "response_format": None, "stream_options": None,
            "tool_choice": None, "tool_prompt": None, "tools": None, "top_logprobs": None}
    assert function(chat_event(chat))[0] == 200
    assert function.fake.seen[-1] == {"messages": [MESSAGE], "max_tokens": 5, "temperature": 0.1, "top_p": 0.9,
                                      "seed": 3, "stop": ["a"]}
    generate = {"inputs": "hello", "parameters": {"details": True, "do_sample": False, "max_new_tokens": 5,
                                                  "seed": 1, "stop": ["x"], "temperature": 0.5}}
    assert function(generate_event(generate))[0] == 200


def test_an_unknown_model_is_a_404_and_the_precheck_guards_the_routes(function):
    status, body, _ = function(generate_event({"inputs": "x"}, model="gpt-9"))
    assert (status, body["error"]["code"]) == (404, "model_not_found")
    assert body["error"]["message"] == "no text-generation model 'gpt-9'; this deployment serves 'smollm2'"
    status, body, _ = function(generate_event(key_id="k", scopes="feedback"))
    assert (status, body["error"]["code"]) == (403, "forbidden")
    status, body, headers = function(chat_event(key_id="k", quota_exceeded=True, retry_after=9))
    assert (status, body["error"]["code"], headers["Retry-After"]) == (429, "quota_exceeded", "9")
    plain = generate_event()
    plain["headers"]["content-type"] = "text/plain"
    assert function(plain)[0] == 415
    assert not function.sent


def test_without_a_large_model_the_routes_are_404(function, monkeypatch):
    settings = function.module.settings
    monkeypatch.setattr(function.module, "service",
                        GenerationService(type(settings)(**{**settings.__dict__, "generate_model": None})))
    status, body, _ = function(generate_event())
    assert (status, body["error"]) == (404, {"code": "model_not_found", "message": "no text-generation model "
                                                                                   "'smollm2': this deployment serves "
                                                                                   "none"})


# -- faults, as the client gets them ----------------------------------------------------------------------------

def test_each_fault_of_the_endpoint_reaches_the_client_in_the_api_s_shape(function):
    cases = [
        (model_error(400, {"error": "the prompt is 3000 tokens and 16 new tokens were asked for: over the model's "
                                    "context of 2048", "error_type": "prompt_too_long"}),
         400, "rejected_by_model", "the model refused the request: the prompt is 3000 tokens", None),
        (model_error(500, {"error": "CUDA error: out of memory", "code": 500}),
         502, "model_error", "the model failed (500): CUDA error: out of memory", None),
        (slow(5), 504, "model_timeout", "the model did not answer within 1 s", None),
        (service_error("InternalFailure", 500), 502, "upstream_error", "(InternalFailure); the details are in the logs",
         None),
    ]
    for fault, status, code, message, retry_after in cases:
        function.fake.faults.append(fault)
        answered, body, headers = function(generate_event())
        assert (answered, body["error"]["code"]) == (status, code)
        assert body["error"]["message"].startswith(message) or message in body["error"]["message"]
        assert headers.get("Retry-After") == retry_after
    assert len(function.sent) == len(cases)  # no retry of any of them


def test_throttling_is_retried_then_answered_429_with_retry_after(function):
    function.fake.faults.extend([throttled(), throttled()])
    assert function(generate_event())[0] == 200
    assert (len(function.sent), len(function.slept)) == (3, 2)
    function.fake.faults.extend([throttled()] * 3)
    status, body, headers = function(chat_event())
    assert (status, body["error"]["code"], headers["Retry-After"]) == (429, "throttled", "1")


def test_a_refused_connection_is_a_503(function):
    function.fake.refused = True
    status, body, headers = function(generate_event())
    assert (status, body["error"]["code"], headers["Retry-After"]) == (503, "endpoint_unavailable", "1")


def test_a_missing_endpoint_is_a_503_decided_by_describe_endpoint(function):
    from moto import mock_aws

    function.fake.name = "another-endpoint"  # the runtime answers ValidationError, as SageMaker does for ferry-llm
    with mock_aws():
        status, body, _ = function(generate_event())
        assert (status, body["error"]["code"]) == (503, "endpoint_unavailable")
        assert body["error"]["message"].startswith("the endpoint 'ferry-llm' does not exist")
        create_endpoint()
        function.module.service = GenerationService(function.module.settings)  # a new container: nothing cached
        status, body, _ = function(generate_event())  # InService, yet refused: the call itself was wrong
        assert (status, body["error"]["code"]) == (502, "upstream_error")


# -- the predict function lists the large model -----------------------------------------------------------------------

def create_endpoint(name: str = ENDPOINT) -> None:
    import boto3

    sagemaker = boto3.client("sagemaker", region_name="us-east-1")
    sagemaker.create_model(ModelName="smollm2", ExecutionRoleArn="arn:aws:iam::123456789012:role/sagemaker",
                           PrimaryContainer={"Image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference"})
    sagemaker.create_endpoint_config(EndpointConfigName="smollm2", ProductionVariants=[{
        "VariantName": "all", "ModelName": "smollm2", "InitialInstanceCount": 1, "InstanceType": "ml.g4dn.xlarge"}])
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName="smollm2")


def write_model(models: Any, name: str = "sentiment") -> None:
    """A classifier's folder with a manifest and stand-in files: listed from its manifest, never loaded."""
    import hashlib

    folder = models / name
    folder.mkdir(parents=True)
    files = {}
    for relative in ("model.onnx", "tokenizer.json"):
        (folder / relative).write_bytes(relative.encode())
        files[relative] = {"sha256": hashlib.sha256(relative.encode()).hexdigest(), "size": len(relative)}
    (folder / "manifest.json").write_text(json.dumps({
        "schema_version": 1, "name": name, "version": "a" * 12, "task": "text-classification",
        "labels": ["negative", "positive"], "max_length": 64, "files": files}))


def predict_app(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, **environment: str) -> Iterator[Any]:
    """functions/predict/app.py over a folder of one classifier, with `environment` (FERRY_GENERATE_*)."""
    write_model(tmp_path / "models")
    for name in (*ENV, "AWS_ENDPOINT_URL", "FERRY_PRELOAD"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"FERRY_MODELS_DIR": str(tmp_path / "models"), "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", **environment}.items():
        monkeypatch.setenv(name, value)
    endpoint_client._client.cache_clear()
    try:
        yield load("predict", "ferry_predict_app_under_test")
    finally:
        endpoint_client._client.cache_clear()
        sys.modules.pop("ferry_predict_app_under_test", None)


@pytest.fixture()
def predict_function(tmp_path, monkeypatch) -> Iterator[Any]:
    yield from predict_app(tmp_path, monkeypatch)


@pytest.fixture()
def predict_with_large_model(tmp_path, monkeypatch) -> Iterator[Any]:
    yield from predict_app(tmp_path, monkeypatch, FERRY_GENERATE_MODEL="smollm2", FERRY_GENERATE_ENDPOINT=ENDPOINT)


def get(module: Any, path: str) -> tuple[int, Any]:
    loaded = event("models.json")
    loaded["rawPath"] = loaded["requestContext"]["http"]["path"] = path
    answer = module.lambda_handler(loaded, LambdaContext("PredictFunction"))
    return answer["statusCode"], json.loads(answer["body"])


def test_without_a_large_model_the_listing_is_the_layers_alone(predict_function):
    status, body = get(predict_function, "/v1/models")
    assert status == 200 and [model["name"] for model in body["models"]] == ["sentiment"]
    assert get(predict_function, "/v1/models/smollm2")[0] == 404
    assert endpoint_client._client.cache_info().currsize == 0  # no SageMaker client was made


def test_the_large_model_is_listed_with_its_endpoint_s_status(predict_with_large_model):
    from moto import mock_aws

    assert endpoint_client._client.cache_info().currsize == 0  # the cold start made no SageMaker client
    with mock_aws():
        status, body = get(predict_with_large_model, "/v1/models")
        assert status == 200 and body["models"][0]["name"] == "sentiment"
        assert body["models"][1] == {"name": "smollm2", "task": "text-generation", "version": VERSION,
                                     "max_new_tokens": 512, "endpoint": {"name": ENDPOINT, "status": "NotFound"}}
        create_endpoint()
        assert get(predict_with_large_model, "/v1/models/smollm2")[1]["endpoint"]["status"] == "NotFound"  # cached 30 s
        predict_with_large_model.generation._status._read_at -= 31
        status, described = get(predict_with_large_model, "/v1/models/smollm2")
        assert (status, described["endpoint"]) == (200, {"name": ENDPOINT, "status": "InService"})
        document = json.loads(get_openapi(predict_with_large_model))
        assert "smollm2" in json.dumps(document["paths"]["/v1/models/{model}"]["get"]["parameters"])


def test_a_status_that_cannot_be_read_never_fails_the_listing(predict_with_large_model):
    import boto3
    from botocore.stub import Stubber

    from ferry.runtime.endpoint_client import EndpointStatus
    from ferry.runtime.generation import GenerationCatalog

    sagemaker = boto3.client("sagemaker", region_name="us-east-1")
    catalog = GenerationCatalog(predict_with_large_model.settings, status=EndpointStatus(ENDPOINT, client=sagemaker))
    predict_with_large_model.api.generation = catalog
    with Stubber(sagemaker) as stubber:
        stubber.add_client_error("describe_endpoint", "AccessDeniedException", "not allowed", 400)
        status, body = get(predict_with_large_model, "/v1/models")
    assert status == 200 and body["models"][1]["endpoint"]["status"] == "Unknown (AccessDeniedException)"


def test_predicting_with_the_large_model_names_its_routes(predict_with_large_model):
    loaded = event("predict.json")
    loaded["rawPath"] = loaded["requestContext"]["http"]["path"] = "/v1/models/smollm2/predict"
    answer = predict_with_large_model.lambda_handler(loaded, LambdaContext("PredictFunction"))
    body = json.loads(answer["body"])
    assert (answer["statusCode"], body["error"]["code"]) == (400, "wrong_task")
    assert body["error"]["message"] == (
        "'smollm2' is a text-generation model: POST /v1/models/smollm2/generate (Hugging Face text generation) or "
        "/v1/models/smollm2/v1/chat/completions (OpenAI chat completions)")


def get_openapi(module: Any) -> str:
    loaded = event("models.json")
    loaded["rawPath"] = loaded["requestContext"]["http"]["path"] = "/openapi.json"
    return str(module.lambda_handler(loaded, LambdaContext("PredictFunction"))["body"])
