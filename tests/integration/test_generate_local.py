"""The large-model path end to end on this machine, with the real SmolLM2-135M-Instruct: HTTP to the local API ->
the generate function (its own process, the template's environment) -> boto3's sagemaker-runtime -> Ferry's
endpoint server (its own process, the model on the CPU) -> text; the capture line -> the capture function ->
DynamoDB; the endpoint's status from the embedded AWS's DescribeEndpoint. Clients are huggingface_hub's
InferenceClient, unchanged, as a user would point it at the API.

Greedy decoding and questions a 135M model answers right (checked by hand: "The capital of France is Paris.").
The last test stops the endpoint server under the running stack: the API must say 503, never 500.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request

import pytest

from ferry.local.endpoint import LargeModel
from ferry.local.stack import LocalStack

from helpers import ROOT, Server, http_api, run_ferry
from tiny_models import smollm2_folder, tiny_causal_lm

NAME = "smollm2"
FRANCE = "What is the capital of France? Answer in one sentence."


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The local stack with no classifier and SmolLM2 as its large model, behind the local API."""
    layers = tmp_path_factory.mktemp("no-layers")
    stack = LocalStack(root=ROOT, layers_dir=layers, echo=None, large_model=LargeModel(NAME, smollm2_folder()))
    try:
        stack.start()
        with http_api(stack) as url:
            yield stack, url
    finally:
        stack.stop()


@pytest.fixture()
def client(served, monkeypatch):
    """InferenceClient as the README tells a user to point it: text_generation posts to the URL as given (the
    generate route), chat_completion appends /v1/chat/completions to the model's URL."""
    from huggingface_hub import InferenceClient, constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # it refuses even 127.0.0.1 offline (STACK.md)
    return lambda path="": InferenceClient(model=f"{served[1]}/v1/models/{NAME}{path}", token="unused")


def post(url: str, body: dict) -> tuple[int, dict, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def captured(stack: LocalStack, prediction_id: str) -> dict:
    table, deadline = stack.client("dynamodb"), time.monotonic() + 20
    while time.monotonic() < deadline:
        item = table.get_item(TableName=stack.table_names["CaptureTable"],
                              Key={"prediction_id": {"S": prediction_id}}).get("Item")
        if item:
            return item
        time.sleep(0.2)
    raise AssertionError(f"the generation {prediction_id} was not captured")


def test_text_generation_through_the_api_answers_with_the_real_model(client):
    answer = client("/generate").text_generation("The capital of France is", max_new_tokens=4, details=True)
    assert "Paris" in answer.generated_text
    assert answer.details.generated_tokens == 4 and answer.details.finish_reason == "length"


def test_chat_completion_through_the_api_applies_the_chat_template(client):
    completion = client().chat_completion([{"role": "user", "content": FRANCE}], max_tokens=24)
    assert "Paris" in completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"  # it ended on its own (<|im_end|>), not at the bound
    assert completion.usage.prompt_tokens > 10 and 0 < completion.usage.completion_tokens < 24


def test_stop_sequences_are_translated_and_cut(served):
    status, _, body = post(f"{served[1]}/v1/models/{NAME}/generate", {
        "inputs": "The capital of France is", "parameters": {"max_new_tokens": 12, "stop": ["."]}})
    assert status == 200 and body[0]["generated_text"].strip() == "Paris"


def test_the_model_is_listed_with_its_task_and_endpoint_status(served):
    with urllib.request.urlopen(f"{served[1]}/v1/models", timeout=30) as response:
        listed = json.loads(response.read())["models"]
    assert [(model["name"], model["task"], model["endpoint"]) for model in listed] == \
        [(NAME, "text-generation", {"name": f"ferry-{NAME}", "status": "InService"})]


def test_each_generation_is_captured_without_its_text(served):
    stack, url = served
    status, headers, _ = post(f"{url}/v1/models/{NAME}/generate", {
        "inputs": "Name a color.", "parameters": {"max_new_tokens": 3}})
    assert status == 200
    item = captured(stack, headers["x-ferry-prediction-ids"])
    assert item["task"] == {"S": "text-generation"} and item["model"] == {"S": NAME}
    assert item["generated_tokens"] == {"N": "3"} and int(item["prompt_tokens"]["N"]) > 0
    assert "Name a color" not in json.dumps(item)  # CaptureText is false by default: only the prompt's HMAC


def test_feedback_on_a_generation_says_it_takes_no_labels(served):
    _, url = served
    _, headers, _ = post(f"{url}/v1/models/{NAME}/generate", {"inputs": "Hi", "parameters": {"max_new_tokens": 1}})
    status, _, error = post(f"{url}/v1/feedback", {"prediction_id": headers["x-ferry-prediction-ids"],
                                                   "label": "positive"})
    assert status == 400 and "text-generation model: its answers have no labels" in error["error"]["message"]


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"inputs": "hi", "stream": True}, 400, "streaming is not supported"),
    ({"inputs": "hi", "parameters": {"max_new_tokens": 100_000}}, 400, "max_new_tokens"),
    ({"inputs": "hi", "parameters": {"temperature": -1}}, 400, "temperature"),
    ({"inputs": 3}, 400, "inputs"),
])
def test_bad_requests_are_4xx_in_the_api_shape(served, body, status, says):
    answered, _, error = post(f"{served[1]}/v1/models/{NAME}/generate", body)
    assert answered == status and says in error["error"]["message"]


def test_an_unknown_model_is_404(served):
    status, _, error = post(f"{served[1]}/v1/models/gpt-5/generate", {"inputs": "hi"})
    assert status == 404 and "gpt-5" in error["error"]["message"]


def test_the_api_document_describes_both_routes_and_real_answers_match_it(served):
    """GET /openapi.json (the predict function's) describes the generate function's routes; a real generation and
    a real chat completion, details and usage included, validate against the schemas it states."""
    import jsonschema

    _, url = served
    with urllib.request.urlopen(f"{url}/openapi.json", timeout=30) as response:
        document = json.loads(response.read())
    asked = {"/generate": {"inputs": "The capital of France is", "parameters": {"max_new_tokens": 3, "details": True}},
             "/v1/chat/completions": {"messages": [{"role": "user", "content": FRANCE}], "max_tokens": 8}}
    for route, body in asked.items():
        operation = document["paths"][f"/v1/models/{{model}}{route}"]["post"]
        assert operation["parameters"][0]["schema"]["enum"] == [NAME]
        status, headers, answer = post(f"{url}/v1/models/{NAME}{route}", body)
        assert status == 200, answer
        schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
        jsonschema.validate(answer, {**schema, "components": document["components"]})
        assert re.fullmatch(operation["responses"]["200"]["headers"]["x-ferry-prediction-ids"]["schema"]["pattern"],
                            headers["x-ferry-prediction-ids"])
        request = {**operation["requestBody"]["content"]["application/json"]["schema"],
                   "components": document["components"]}
        jsonschema.validate(body, request)  # what was sent is what the document allows
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**body, "stream": "yes"}, request)
    bound = document["components"]["schemas"]["GenerateParameters"]["properties"]["max_new_tokens"]["anyOf"][0]
    status, _, error = post(f"{url}/v1/models/{NAME}/generate",  # the bound stated is the one the function enforces
                            {"inputs": "hi", "parameters": {"max_new_tokens": bound["maximum"] + 1}})
    assert status == 400 and f"at most {bound['maximum']} new tokens" in error["error"]["message"]


def test_an_endpoint_that_went_away_is_a_503_not_a_500(served):
    """Last: it stops the endpoint server under the running stack."""
    stack, url = served
    stack._endpoint.stop()  # the server's process ends; the function's calls are refused
    status, _, error = post(f"{url}/v1/models/{NAME}/generate", {"inputs": "hi", "parameters": {"max_new_tokens": 2}})
    assert status == 503 and error["error"]["code"] == "endpoint_unavailable"


def test_ferry_serve_endpoint_serves_a_model_folder(tmp_path):
    """`ferry serve --endpoint DIR` as a user runs it (a tiny model: the command, not the model, is under test)."""
    model = tiny_causal_lm(tmp_path / "tiny-llm")
    (tmp_path / "no-layers").mkdir()
    server = Server(tmp_path / "no-layers", "--endpoint", str(model), "--no-updates")
    try:
        status, _, body = server.request("POST", "/v1/models/tiny-llm/generate", {
            "inputs": "hello", "parameters": {"max_new_tokens": 2}})
        assert status == 200 and isinstance(body[0]["generated_text"], str)
    finally:
        assert server.stop() == 0
    assert any("tiny-llm (text generation) on a local endpoint" in line for line in server.lines)


def test_ferry_serve_endpoint_refuses_a_folder_with_no_model(tmp_path):
    result = run_ferry("serve", "--layers-dir", str(tmp_path), "--endpoint", str(tmp_path / "nothing"))
    assert result.returncode == 2 and "--endpoint" in result.stderr and "no such folder" in result.stderr
    assert "Traceback" not in result.stderr
