"""The large model's dialects (ferry.runtime.generation): Hugging Face and OpenAI requests translated to AWS LMI's,
LMI's answers translated back, the parameters refused, and the capture record of a generation on its way through the
capture path (capture line, EMF, DynamoDB item) without disturbing the monitor."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from ferry.runtime import capture
from ferry.runtime.emf import ENDPOINT_LATENCY, GENERATED_TOKENS, PROMPT_TOKENS
from ferry.runtime.exceptions import EndpointError
from ferry.runtime.generation import (
    GenerationCatalog,
    chat_answer,
    derived_version,
    generate_answer,
    generation_models,
    generation_record,
    lmi_chat_request,
    lmi_request,
)
from ferry.runtime.service import capture_record
from ferry.runtime.settings import Settings

from helpers import ROOT

SETTINGS = Settings(models_path=(ROOT,), max_input_chars=200, generate_model="smollm2", generate_endpoint="ferry-llm",
                    generate_max_new_tokens=64, stack_secret="s3cret")
MODELS = generation_models(SETTINGS)
BOUND = 64


def generate(parameters: dict[str, Any] | None = None, **top: Any) -> Any:
    body = {"inputs": "What is the capital of France?", **top}
    if parameters is not None:
        body["parameters"] = parameters
    return MODELS.generate.model_validate(body)


def chat(**body: Any) -> Any:
    return MODELS.chat.model_validate({"messages": [{"role": "user", "content": "Capital of France?"}], **body})


# -- Hugging Face -> LMI ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("given", "sent"), [
    (None, {"max_new_tokens": BOUND, "details": True}),
    ({"max_new_tokens": 8}, {"max_new_tokens": 8, "details": True}),
    ({"max_new_tokens": 8.0}, {"max_new_tokens": 8, "details": True}),  # 8.0 is the integer 8
    ({"stop": ["\n", "."]}, {"max_new_tokens": BOUND, "details": True, "stop_sequences": ["\n", "."]}),
    ({"stop_sequences": ["\n"], "stop": ["\n", "x"]},  # the deprecated name too, merged without repeats
     {"max_new_tokens": BOUND, "details": True, "stop_sequences": ["\n", "x"]}),
    ({"temperature": 0.7}, {"max_new_tokens": BOUND, "details": True, "temperature": 0.7, "do_sample": True}),
    ({"top_p": 0.9, "top_k": 5}, {"max_new_tokens": BOUND, "details": True, "top_p": 0.9, "top_k": 5,
                                  "do_sample": True}),
    ({"temperature": 0.7, "do_sample": False},  # the client's false is kept (LMI then decodes greedily)
     {"max_new_tokens": BOUND, "details": True, "temperature": 0.7, "do_sample": False}),
    ({"do_sample": True}, {"max_new_tokens": BOUND, "details": True, "do_sample": True}),
    ({"seed": 7, "repetition_penalty": 1.2, "return_full_text": True},  # a seed alone does not make it sample
     {"max_new_tokens": BOUND, "details": True, "seed": 7, "repetition_penalty": 1.2, "return_full_text": True}),
    ({"details": False}, {"max_new_tokens": BOUND, "details": True}),  # always asked: the tokens are captured
    ({name: None for name in ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "stop",
                              "seed", "do_sample", "return_full_text", "details", "decoder_input_details",
                              "truncate", "typical_p", "watermark", "frequency_penalty", "best_of", "top_n_tokens",
                              "grammar", "adapter_id", "stop_sequences")},  # InferenceClient's nulls: not given
     {"max_new_tokens": BOUND, "details": True}),
])
def test_a_text_generation_request_is_translated_to_lmi(given, sent):
    request = generate(given)
    assert lmi_request(request, BOUND) == {"inputs": "What is the capital of France?", "parameters": sent}
    assert request.parameters is None or not request.parameters.unsupported()


@pytest.mark.parametrize(("given", "refused"), [
    ({"grammar": {"type": "json", "value": {}}}, ["parameters.grammar"]),
    ({"best_of": 2, "adapter_id": "lora"}, ["parameters.adapter_id", "parameters.best_of"]),
    ({"best_of": 1, "watermark": False, "decoder_input_details": False, "top_n_tokens": 0,
      "frequency_penalty": 0}, []),  # neutral values are no request for the feature
    ({"truncate": 100, "typical_p": 0.5, "watermark": True, "top_n_tokens": 3, "decoder_input_details": True,
      "frequency_penalty": 0.5},
     ["parameters.decoder_input_details", "parameters.truncate", "parameters.typical_p", "parameters.watermark",
      "parameters.frequency_penalty", "parameters.top_n_tokens"]),
])
def test_parameters_the_endpoint_does_not_serve_are_named(given, refused):
    assert generate(given).parameters.unsupported() == refused


def test_a_chat_request_is_sent_as_openai_chat_with_plain_strings():
    request = chat(model="dummy", user="u-1", max_tokens=8, temperature=0, top_p=0.5, seed=3, stop="\n",
                   messages=[{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": [{"type": "text", "text": "Capital "},
                                                          {"type": "text", "text": "of France?"}], "name": "ann"}])
    assert lmi_chat_request(request, BOUND) == {
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Capital of France?"}],  # no name: LMI templates drop it
        "max_tokens": 8, "temperature": 0, "top_p": 0.5, "seed": 3, "stop": ["\n"]}
    assert lmi_chat_request(chat(), BOUND)["max_tokens"] == BOUND  # none given: the bound
    assert lmi_chat_request(chat(max_tokens=8, max_completion_tokens=4), BOUND)["max_tokens"] == 4
    assert lmi_chat_request(chat(stop=["a", "b"]), BOUND)["stop"] == ["a", "b"]
    assert not chat(model="dummy", n=1, stream=False, tools=[], tool_choice="none", logprobs=False).unsupported()
    assert chat(n=2, tools=[{"type": "function"}], response_format={"type": "json_object"}, presence_penalty=1,
                messages=[{"role": "assistant", "content": "", "tool_calls": [{"id": "1"}]}]).unsupported() == [
        "n", "presence_penalty", "response_format", "tools", "messages[0].tool_calls"]


# -- LMI -> Hugging Face and OpenAI ----------------------------------------------------------------------------------

LMI_ANSWER = {"generated_text": " Paris.", "details": {
    "finish_reason": "eos_token", "generated_tokens": 2, "inputs": "What is the capital of France?",
    "prompt_tokens": 7, "tokens": [{"id": 12, "text": " Paris", "log_prob": -0.1, "special_token": False},
                                   {"id": 13, "text": ".", "log_prob": -0.2, "special_token": False}]}}


def test_an_lmi_answer_becomes_tgi_s_with_details_only_when_asked():
    plain = generate_answer(LMI_ANSWER, details=False)
    assert plain.payload == [{"generated_text": " Paris."}]
    assert (plain.prompt_tokens, plain.generated_tokens, plain.finish_reason) == (7, 2, "eos_token")
    detailed = generate_answer([LMI_ANSWER], details=True)  # a list, as with OPTION_TGI_COMPAT
    assert detailed.payload == [{"generated_text": " Paris.", "details": {
        "finish_reason": "eos_token", "generated_tokens": 2, "seed": None, "prefill": [],
        "tokens": [{"id": 12, "text": " Paris", "logprob": -0.1, "special": False},
                   {"id": 13, "text": ".", "logprob": -0.2, "special": False}]}}]
    spelled = generate_answer({"generated_text": "x", "details": {"finish reason": "length"}}, details=False)
    assert (spelled.finish_reason, spelled.generated_tokens) == ("length", None)  # LMI's docs spell it so


def test_the_answer_parses_with_huggingface_hub_s_own_types():
    from huggingface_hub import ChatCompletionOutput, TextGenerationOutput

    output = TextGenerationOutput.parse_obj_as_instance(generate_answer(LMI_ANSWER, details=True).payload[0])
    assert output.details.finish_reason == "eos_token" and output.details.tokens[0].logprob == -0.1
    completion = chat_answer({"choices": [{"message": {"content": "Paris."}, "finish_reason": "stop"}],
                              "usage": {"prompt_tokens": 5, "completion_tokens": 2}},
                             completion_id="p1.x", model="smollm2", version="a" * 12, created=1)
    parsed = ChatCompletionOutput.parse_obj_as_instance(completion.payload)
    assert (parsed.id, parsed.model, parsed.choices[0].message.content, parsed.usage.total_tokens) == (
        "p1.x", "smollm2", "Paris.", 7)


@pytest.mark.parametrize("answer", [{}, [], {"generated_text": 3}, "Paris", None, [{"text": "x"}]])
def test_an_answer_without_generated_text_is_the_endpoint_s_fault(answer):
    with pytest.raises(EndpointError, match="without generated_text"):
        generate_answer(answer, details=False)


@pytest.mark.parametrize("answer", [{}, {"choices": []}, {"choices": [{"message": {"content": None}}]}, []])
def test_a_chat_answer_without_a_message_is_the_endpoint_s_fault(answer):
    with pytest.raises(EndpointError, match="without a message"):
        chat_answer(answer, completion_id="p1.x", model="smollm2", version="a" * 12, created=1)


def test_a_chat_completion_carries_the_prediction_id_and_the_api_s_model_name():
    lmi = {"id": "chatcmpl-9", "object": "chat.completion", "created": 1_795_953_600, "model": "/opt/ml/model",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}
    answer = chat_answer(lmi, completion_id="p1.smollm2.x", model="smollm2", version="a" * 12, created=5)
    assert answer.payload == {
        "id": "p1.smollm2.x", "object": "chat.completion", "created": 1_795_953_600, "model": "smollm2",
        "system_fingerprint": "smollm2-aaaaaaaaaaaa",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "logprobs": None,
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}
    assert (answer.prompt_tokens, answer.generated_tokens, answer.finish_reason) == (9, 2, "stop")


# -- capture ---------------------------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def record(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = dict(
        prediction_id="p1.smollm2.aaaaaaaaaaaa.00000000000000000000.0000000000000000", model="smollm2",
        version="aaaaaaaaaaaa", route="generate", time=NOW, latency_ms=812.34567, endpoint_latency_ms=790.1,
        prompt="What is the capital of France?", answer=" Paris.", prompt_tokens=7, generated_tokens=2,
        finish_reason="eos_token", max_new_tokens=64, secret=b"s3cret", key_id="k-1")
    return generation_record(**{**arguments, **overrides})


def test_a_generation_is_captured_without_its_text_unless_configured():
    captured = record()
    assert captured == {
        "prediction_id": captured["prediction_id"], "model": "smollm2", "version": "aaaaaaaaaaaa",
        "task": "text-generation", "route": "generate", "time": "2026-11-29T12:00:00.000+00:00",
        "epoch_ms": 1_795_953_600_000, "latency_ms": 812.346, "endpoint_latency_ms": 790.1, "batch_size": 1,
        "channel": "api", "prompt_chars": 30, "max_new_tokens": 64, "prompt_tokens": 7, "generated_tokens": 2,
        "finish_reason": "eos_token", "text_hmac": captured["text_hmac"], "key_id": "k-1"}
    # the same keyed hash as a classifier's capture of the same text: equal texts can be told apart across tasks
    classifier = capture_record(prediction_id="x", model="m", version="v", time=NOW, label=None, score=None,
                                latency_ms=1, batch_size=1, token_length=1, truncated=False,
                                text="What is the capital of France?", keep_text=False, secret=b"s3cret")
    assert captured["text_hmac"] == classifier["text_hmac"] == hmac.new(
        b"s3cret", b"What is the capital of France?", hashlib.sha256).hexdigest()
    kept = record(keep_text=True, secret=None, key_id=None, prompt_tokens=None, retries=2)
    assert (kept["text"], kept["generated_text"], kept["endpoint_retries"]) == (
        "What is the capital of France?", " Paris.", 2)
    assert "text_hmac" not in kept and "key_id" not in kept and "prompt_tokens" not in kept


def test_a_generation_s_capture_line_carries_its_token_metrics_and_becomes_an_item():
    captured = record()
    line = json.loads(capture.capture_line(captured, service="ferry-generate", request_id="r-1", namespace="NS",
                                           latency_ms=812.3, batch_size=1))
    assert line["capture"] == captured and line["message"] == "prediction"
    metrics = {metric["Name"] for directive in line["_aws"]["CloudWatchMetrics"] for metric in directive["Metrics"]}
    assert metrics == {"Predictions", "Latency", "BatchSize", ENDPOINT_LATENCY, PROMPT_TOKENS, GENERATED_TOKENS}
    assert (line[PROMPT_TOKENS], line[GENERATED_TOKENS], line[ENDPOINT_LATENCY]) == (7, 2, 790.1)
    assert all(directive["Dimensions"] == [["model", "version"]] for directive in line["_aws"]["CloudWatchMetrics"])
    # what the capture function reads from a subscription delivery, and the item it writes
    event = capture.encode_subscription_event("/aws/lambda/generate", "s", [(1, json.dumps(line))])
    records = list(capture.capture_records(capture.decode_subscription_event(event)))
    assert records == [captured]
    item = capture.to_item(records[0], ttl_days=90)
    assert item["model_version"] == "smollm2#aaaaaaaaaaaa" and item["task"] == "text-generation"
    assert item["expires_at"] == 1_795_953_600 + 90 * 86_400 and str(item["latency_ms"]) == "812.346"
    # a classifier's line is as before: no generation metric on it
    classifier = capture.capture_line({"model": "m", "version": "v", "label": "a", "epoch_ms": 1, "time": "t"},
                                      service="ferry-predict", request_id=None)
    assert GENERATED_TOKENS not in classifier


def test_the_capture_function_writes_a_generation_and_the_monitor_passes_it_by(monkeypatch):
    """The capture function's writer takes a generation's record (and counts it toward its key's quota); the monitor
    reads by model and version of the layers' models only, so it never reads one, and runs as before beside it."""
    import boto3
    from moto import mock_aws

    from ferry.local import template as tpl
    from ferry.runtime.manifest import FileEntry, Manifest
    from ferry.runtime.monitor import Monitor, MonitorConfig, Sources

    for name, value in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    template = tpl.load_template(ROOT / "template.yaml")
    with mock_aws():
        client, dynamodb = boto3.client("dynamodb"), boto3.resource("dynamodb")
        for logical_id in ("CaptureTable", "MonitorStateTable", "UsageTable"):
            client.create_table(**tpl.tables(template)[logical_id])
        captures = dynamodb.Table("CaptureTable")
        generation = record()
        classifier = capture_record(prediction_id="p1.sentiment.x", model="sentiment", version="b" * 12, time=NOW,
                                    label="positive", score=0.9, latency_ms=3, batch_size=1, token_length=9,
                                    truncated=False, text="I love it", keep_text=False, confidence=0.9)
        result = capture.write_captures(captures, [generation, classifier], 90, dynamodb.Table("UsageTable"))
        assert (result.written, result.invalid, result.failed) == (2, 0, 0)
        assert result.usage == {("k-1", "2026-11-29"): 1}
        assert captures.get_item(Key={"prediction_id": generation["prediction_id"]})["Item"]["task"] == \
            "text-generation"
        sha = "0" * 64
        manifest = Manifest(name="sentiment", version="b" * 12, task="text-classification", max_length=64,
                            files={"model.onnx": FileEntry(sha, 1), "tokenizer.json": FileEntry(sha, 1)},
                            labels=("negative", "positive"))
        now = NOW.timestamp() + 600
        sources = Sources(captures=captures, state=dynamodb.Table("MonitorStateTable"))
        [health] = Monitor({"sentiment": manifest}, sources, MonitorConfig(settle_seconds=0),
                           clock=lambda: now).run()
        assert (health.model, health.predictions) == ("sentiment", 1)  # the classifier's capture alone


# -- what the predict function lists -----------------------------------------------------------------------------------

class Status:
    def __init__(self, value: str) -> None:
        self.value, self.asked = value, 0

    def current(self, max_age_s: float | None = None) -> str:
        self.asked += 1
        return self.value


def test_the_catalog_lists_the_large_model_with_its_endpoint_s_status():
    status = Status("Creating")
    catalog = GenerationCatalog(SETTINGS, status=status)  # type: ignore[arg-type]
    assert catalog.summaries() == [{"name": "smollm2", "task": "text-generation",
                                    "version": derived_version("smollm2", "ferry-llm"), "max_new_tokens": 64,
                                    "endpoint": {"name": "ferry-llm", "status": "Creating"}}]
    assert catalog.serves("smollm2") and not catalog.serves("sentiment")
    assert "POST /v1/models/smollm2/generate" in str(catalog.wrong_route("smollm2"))
    assert GenerationCatalog(Settings(models_path=(ROOT,))).summaries() == []
    unset = GenerationCatalog(Settings(models_path=(ROOT,), generate_model="smollm2"))
    assert unset.describe("smollm2")["endpoint"] == {"name": None,
                                                     "status": "Unknown (FERRY_GENERATE_ENDPOINT is not set)"}
    pinned = Settings(models_path=(ROOT,), generate_model="smollm2", generate_version="0123456789ab")
    assert GenerationCatalog(pinned, status=status).describe("smollm2")["version"] == "0123456789ab"  # type: ignore[arg-type]


def test_settings_read_the_large_model_s_variables():
    from ferry.runtime.exceptions import SettingsError

    read = Settings.from_env({"FERRY_GENERATE_MODEL": "smollm2", "FERRY_GENERATE_ENDPOINT": "ferry-llm",
                              "FERRY_GENERATE_MAX_NEW_TOKENS": "128", "FERRY_GENERATE_TIMEOUT_S": "10",
                              "FERRY_GENERATE_VERSION": "0123456789AB"})
    assert (read.generate_model, read.generate_endpoint, read.generate_max_new_tokens, read.generate_timeout_s,
            read.generate_version) == ("smollm2", "ferry-llm", 128, 10, "0123456789ab")
    defaults = Settings.from_env({"FERRY_GENERATE_MODEL": ""})
    assert (defaults.generate_model, defaults.generate_max_new_tokens, defaults.generate_timeout_s) == (None, 512, 25)
    for bad in ({"FERRY_GENERATE_MODEL": "Small LM"}, {"FERRY_GENERATE_MAX_NEW_TOKENS": "0"},
                {"FERRY_GENERATE_TIMEOUT_S": "soon"}, {"FERRY_GENERATE_VERSION": "abc"}):
        with pytest.raises(SettingsError, match=next(iter(bad))):
            Settings.from_env(bad)
