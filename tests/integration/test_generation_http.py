"""The generate function's endpoint calls over real HTTP (tests/unit opens no socket): the fake LMI endpoint of
tests/fake_endpoint.py served on 127.0.0.1, failing on purpose as SageMaker Runtime fails (a ModelError 424,
throttling, an answer slower than the 1 s read timeout, a refused connection), reached by a sagemaker-runtime client
configured as the function configures it; then functions/generate/app.py through lambda_handler against it, its
client pointed there by AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME as the local stack points it."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from ferry.local.context import LambdaContext
from ferry.runtime import endpoint_client
from ferry.runtime.endpoint_client import EndpointClient, runtime_config
from ferry.runtime.exceptions import (
    EndpointError,
    EndpointThrottledError,
    EndpointTimeoutError,
    EndpointUnavailableError,
    ModelFailedError,
    ModelRejectedError,
)

from fake_endpoint import (
    BODY,
    ENDPOINT,
    REGION,
    EndpointServer,
    FakeEndpoint,
    model_error,
    service_error,
    slow,
    throttled,
)
from helpers import ROOT, free_port


class FixedStatus:
    def __init__(self, value: str) -> None:
        self.value = value

    def current(self, max_age_s: float | None = None) -> str:
        return self.value


@pytest.fixture()
def server() -> Iterator[EndpointServer]:
    with EndpointServer(FakeEndpoint()).running() as running:
        yield running


def over_http(url: str, status: str = "InService") -> EndpointClient:
    runtime = boto3.client("sagemaker-runtime", endpoint_url=url, config=runtime_config(1), **REGION)
    return EndpointClient(ENDPOINT, timeout_s=1, runtime=runtime, status=FixedStatus(status),  # type: ignore[arg-type]
                          sleep=lambda _: None)


def test_each_fault_over_http(server):
    fake, client = server.endpoint, over_http(server.url)
    assert client.invoke(BODY).body["details"]["generated_tokens"] == 4
    cases = [
        (model_error(400, {"error": "the prompt is over the context", "error_type": "prompt_too_long"}),
         ModelRejectedError, "the model refused the request: the prompt is over the context", 1),
        (model_error(500, {"error": "engine died", "code": 500}), ModelFailedError, "the model failed (500): engine "
                                                                                    "died", 1),
        (service_error("InternalFailure", 500), EndpointError, "(InternalFailure)", 1),
        (throttled(), EndpointThrottledError, "busy (ThrottlingException)", 3),  # tried 3 times, then 429
    ]
    for fault, kind, message, tries in cases:
        fake.seen.clear()
        fake.faults[:] = [fault] * 3
        with pytest.raises(kind, match=message.replace("(", r"\(").replace(")", r"\)")):
            client.invoke(BODY)
        assert len(fake.seen) == tries, (kind, fake.seen)


def test_a_slow_answer_is_a_504_after_the_read_timeout_and_is_not_retried(server):
    fake, client = server.endpoint, over_http(server.url)
    fake.faults[:] = [slow(3), slow(3), slow(3)]
    started = time.monotonic()
    with pytest.raises(EndpointTimeoutError, match="did not answer within 1 s") as raised:
        client.invoke(BODY)
    elapsed = time.monotonic() - started
    assert raised.value.status == 504 and 0.9 < elapsed < 2.5  # one read timeout, not botocore's 3 or 5
    assert len(fake.seen) == 1


def test_a_missing_endpoint_and_a_refused_connection_are_503s(server):
    server.endpoint.name = "another-endpoint"  # SageMaker's ValidationError for ferry-llm
    with pytest.raises(EndpointUnavailableError, match="'ferry-llm' does not exist"):
        over_http(server.url, status="NotFound").invoke(BODY)
    nobody = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(EndpointUnavailableError, match="cannot be reached") as raised:
        over_http(nobody).invoke(BODY)
    assert raised.value.headers == {"Retry-After": "1"} and time.monotonic() - started < 2


# -- the function, end to end ------------------------------------------------------------------------------------------

@pytest.fixture()
def function(server, monkeypatch) -> Iterator[Any]:
    environment = {"FERRY_GENERATE_MODEL": "smollm2", "FERRY_GENERATE_ENDPOINT": ENDPOINT,
                   "FERRY_GENERATE_TIMEOUT_S": "1", "FERRY_STACK_SECRET": "s", "AWS_DEFAULT_REGION": "us-east-1",
                   "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
                   "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # moto's, in the local stack: not for InvokeEndpoint
                   "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": server.url}
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    endpoint_client._client.cache_clear()
    spec = importlib.util.spec_from_file_location("ferry_generate_app_over_http", ROOT / "functions" / "generate" /
                                                  "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    try:
        yield module
    finally:
        endpoint_client._client.cache_clear()
        sys.modules.pop(spec.name, None)


def invoke(module: Any, name: str) -> tuple[int, Any, dict[str, str]]:
    event = json.loads((ROOT / "events" / name).read_text())
    answer = module.lambda_handler(event, LambdaContext("GenerateFunction"))
    return answer["statusCode"], json.loads(answer["body"]), answer.get("headers") or {}


def test_the_function_generates_over_http_and_maps_a_timeout(function, server):
    status, body, headers = invoke(function, "generate.json")
    assert status == 200 and body[0]["generated_text"] == "Paris is the capital of France ."
    assert headers["x-ferry-prediction-ids"].startswith("p1.smollm2.")
    status, body, _ = invoke(function, "generate-chat.json")
    assert (status, body["choices"][0]["message"]["content"]) == (200, "Paris.")
    status, body, _ = invoke(function, "generate-bad-parameter.json")
    assert (status, body["error"]["code"]) == (400, "invalid_request") and "at most 512" in body["error"]["message"]
    server.endpoint.faults.append(slow(3))
    status, body, _ = invoke(function, "generate.json")
    assert (status, body["error"]["code"]) == (504, "model_timeout")
    assert len(server.endpoint.seen) == 3  # the bad parameter never reached the endpoint
