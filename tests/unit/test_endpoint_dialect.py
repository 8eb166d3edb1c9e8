"""The endpoint's wire dialect (LMI's text generation and OpenAI's chat completions): what it accepts, what it refuses
with a 400 naming the parameter, and the shape of its answers. No model: generations are made up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ferry.endpoint import dialect
from ferry.endpoint.engine import Generation, Sampling
from ferry.endpoint.exceptions import (
    BusyError,
    InvalidRequestError,
    ModelNotFoundError,
    UnsupportedFeatureError,
    UnsupportedMediaTypeError,
)
from ferry.endpoint.server import resolve_model

TEXT = {"inputs": "Hello"}
CHAT = {"messages": [{"role": "user", "content": "Hello"}]}


def text(**parameters):
    return {**TEXT, "parameters": parameters}


def chat(**fields):
    return {**CHAT, **fields}


def generation(text="Paris.", finish="eos_token", prompt=12, new=3) -> Generation:
    return Generation(text=text, prompt_tokens=prompt, generated_tokens=new, finish_reason=finish, seconds=0.5,
                      first_token_seconds=0.1)


# -- refused: every bad value is a 400 that names what is wrong ------------------------------------------------------

REFUSED = [
    # (body, the field named, a word of the message)
    ({}, "inputs", "required"),
    ({"inputs": 3}, "inputs", "string"),
    ({"inputs": ["a", "b"]}, "inputs", "string"),
    ({"inputs": ""}, "inputs", "empty"),
    ({"inputs": "x", "parameters": [1]}, "parameters", "object"),
    ({"inputs": "x", "prompt": "y"}, "prompt", "not a parameter"),
    (text(max_new_token=3), "parameters.max_new_token", "not a parameter"),
    (text(stop=["x"]), "parameters.stop", "stop_sequences"),
    (text(max_new_tokens=0), "parameters.max_new_tokens", "from 1"),
    (text(max_new_tokens=dialect.MAX_NEW_TOKENS + 1), "parameters.max_new_tokens", str(dialect.MAX_NEW_TOKENS)),
    (text(max_new_tokens=3.0), "parameters.max_new_tokens", "whole number"),
    (text(max_new_tokens=True), "parameters.max_new_tokens", "whole number"),
    (text(max_new_tokens="8"), "parameters.max_new_tokens", "whole number"),
    (text(temperature=0), "parameters.temperature", "over 0"),
    (text(temperature=-1.0), "parameters.temperature", "over 0"),
    (text(temperature="hot"), "parameters.temperature", "number"),
    (text(temperature=True), "parameters.temperature", "number"),
    (text(top_p=0), "parameters.top_p", "over 0"),
    (text(top_p=1.5), "parameters.top_p", "at most 1"),
    (text(top_k=0), "parameters.top_k", "at least 1"),
    (text(top_k=2.5), "parameters.top_k", "whole number"),
    (text(repetition_penalty=0), "parameters.repetition_penalty", "over 0"),
    (text(stop_sequences="x"), "parameters.stop_sequences", "list of strings"),
    (text(stop_sequences=["x", 1]), "parameters.stop_sequences", "list of strings"),
    (text(stop_sequences=[""]), "parameters.stop_sequences", "characters"),
    (text(stop_sequences=["x"] * (dialect.MAX_STOPS + 1)), "parameters.stop_sequences", "at most"),
    (text(seed=-1), "parameters.seed", "from 0"),
    (text(seed=1.5), "parameters.seed", "whole number"),
    (text(do_sample="yes"), "parameters.do_sample", "true or false"),
    (text(details=1), "parameters.details", "true or false"),
    (text(return_full_text="no"), "parameters.return_full_text", "true or false"),
    ({"inputs": "x", "stream": "no"}, "stream", "true or false"),
    ({"messages": []}, "messages", "non-empty"),
    ({"messages": "hi"}, "messages", "non-empty"),
    ({"messages": ["hi"]}, "messages[0]", "object"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role", "system, user, assistant"),
    ({"messages": [{"content": "hi"}]}, "messages[0].role", "one of"),
    ({"messages": [{"role": "user", "content": ["hi"]}]}, "messages[0].content", "string"),
    ({"messages": [{"role": "user", "content": "hi", "name": "x"}]}, "messages[0]", "unknown keys"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user"}]}, "messages[1].content", "string"),
    (chat(max_tokens=0), "max_tokens", "from 1"),
    (chat(max_tokens=True), "max_tokens", "whole number"),
    (chat(max_tokens=5, max_completion_tokens=5), "max_tokens", "not both"),
    (chat(temperature=2.5), "temperature", "from 0 to 2"),
    (chat(temperature="1"), "temperature", "number"),
    (chat(top_p=0), "top_p", "over 0"),
    (chat(stop=3), "stop", "string or a list"),
    (chat(stop=[""]), "stop", "characters"),
    (chat(seed=-3), "seed", "from 0"),
    (chat(tools=[{"type": "function"}]), "tools", "not a parameter"),
    (chat(inputs="x"), "inputs", "not a parameter"),
]
UNSUPPORTED = [
    ({"inputs": "x", "stream": True}, "stream", "streaming is not supported"),
    (chat(stream=True), "stream", "streaming is not supported"),
    (chat(n=2), "n", "one choice"),
    (chat(frequency_penalty=0.5), "frequency_penalty", "penalties"),
    (chat(presence_penalty=1), "presence_penalty", "penalties"),
    (chat(logprobs=True), "logprobs", "log probabilities"),
    (chat(logprobs=0), "logprobs", "log probabilities"),
]


@pytest.mark.parametrize(("body", "field", "word"), REFUSED + UNSUPPORTED,
                         ids=[f"{field}:{word}" for _, field, word in REFUSED + UNSUPPORTED])
def test_a_bad_request_is_a_400_naming_its_field(body, field, word):
    with pytest.raises(InvalidRequestError) as raised:
        dialect.parse(body)
    error = raised.value
    assert error.status == 400
    assert error.field == field
    assert str(error).startswith(field + " ")
    assert word in str(error)
    answer = dialect.error_body(error)
    assert answer == {"error": str(error), "code": 400, "error_type": error.code}


def test_streaming_and_unsupported_choices_say_unsupported():
    for body, _, _ in UNSUPPORTED:
        with pytest.raises(UnsupportedFeatureError) as raised:
            dialect.parse(body)
        assert raised.value.code == "unsupported"


def test_an_unknown_parameter_names_the_accepted_ones():
    with pytest.raises(InvalidRequestError) as raised:
        dialect.parse(text(max_new_token=3, temprature=1.0))
    message = str(raised.value)
    assert "parameters.max_new_token" in message and "parameters.temprature" in message
    assert "max_new_tokens, temperature, top_p" in message


def test_the_server_limit_bounds_new_tokens():
    limits = dialect.Limits(max_new_tokens=16)
    assert dialect.parse(text(max_new_tokens=16), limits).sampling.max_new_tokens == 16
    with pytest.raises(InvalidRequestError, match="from 1 to 16"):
        dialect.parse(text(max_new_tokens=17), limits)
    with pytest.raises(InvalidRequestError, match="from 1 to 16"):
        dialect.parse(chat(max_tokens=17), limits)


# -- accepted --------------------------------------------------------------------------------------------------------

def test_a_bare_prompt_is_greedy_with_the_default_length():
    request = dialect.parse(TEXT)
    assert request == dialect.TextRequest(inputs="Hello", sampling=Sampling(max_new_tokens=64))
    assert not request.sampling.do_sample


def test_every_lmi_parameter_is_taken():
    request = dialect.parse({"inputs": "Hi", "stream": False, "parameters": {
        "max_new_tokens": 5, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.1,
        "stop_sequences": [".", "\n"], "seed": 7, "do_sample": True, "return_full_text": True, "details": True}})
    assert isinstance(request, dialect.TextRequest)
    assert request.sampling == Sampling(max_new_tokens=5, temperature=0.7, top_p=0.9, top_k=40,
                                        repetition_penalty=1.1, stop_sequences=(".", "\n"), seed=7, do_sample=True)
    assert request.return_full_text and request.details


@pytest.mark.parametrize(("parameters", "samples"), [
    ({"temperature": 0.5}, True), ({"top_p": 0.5}, True), ({"top_k": 3}, True),  # LMI 0.32 and later infer it
    ({"temperature": 0.5, "do_sample": False}, False),  # said outright, it wins
    ({"do_sample": True}, True), ({"seed": 3}, False), ({"repetition_penalty": 1.2}, False),
])
def test_sampling_is_on_when_asked_or_implied(parameters, samples):
    assert dialect.parse(text(**parameters)).sampling.do_sample is samples


def test_null_is_not_given():
    request = dialect.parse({"inputs": "Hi", "stream": None, "parameters": {"max_new_tokens": None, "stop": None,
                                                                            "temperature": None}})
    assert request.sampling == Sampling()
    chat_request = dialect.parse(chat(max_tokens=None, frequency_penalty=None, tools=None, stop=None))
    assert chat_request.sampling == Sampling()


def test_a_chat_request_takes_openai_names():
    request = dialect.parse(chat(model="dummy", max_tokens=9, temperature=0.8, top_p=0.5, stop="\n", seed=1, n=1,
                                 stream=False, frequency_penalty=0, presence_penalty=0.0, logprobs=False))
    assert isinstance(request, dialect.ChatRequest)
    assert request.messages == ({"role": "user", "content": "Hello"},)
    assert request.sampling == Sampling(max_new_tokens=9, temperature=0.8, top_p=0.5, stop_sequences=("\n",),
                                        seed=1, do_sample=True)
    assert dialect.parse(chat(max_completion_tokens=4)).sampling.max_new_tokens == 4
    assert dialect.parse(chat(stop=["a", "b"])).sampling.stop_sequences == ("a", "b")


def test_a_chat_temperature_of_zero_is_greedy():
    assert dialect.parse(chat(temperature=0)).sampling == Sampling()
    assert dialect.parse(chat()).sampling == Sampling()


def test_a_conversation_keeps_its_order_and_roles():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Capital of France?"}]
    assert list(dialect.parse({"messages": messages}).messages) == messages


# -- bodies ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content_type", [None, "application/json", "application/json; charset=utf-8",
                                          "Application/JSON"])
def test_json_bodies_are_read(content_type):
    assert dialect.read_json(content_type, b'{"inputs": "x"}') == {"inputs": "x"}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "application/jsonlines"])
def test_other_content_types_are_a_415(content_type):
    with pytest.raises(UnsupportedMediaTypeError) as raised:
        dialect.read_json(content_type, b'{"inputs": "x"}')
    assert raised.value.status == 415
    assert "application/json" in str(raised.value)


@pytest.mark.parametrize(("body", "word"), [(b'{"inputs": ', "not valid JSON"), (b"", "not valid JSON"),
                                            (b'["x"]', "JSON object"), (b'"x"', "JSON object"),
                                            (b"\xff\xfe{}", "UTF-8")])
def test_a_body_that_is_not_a_json_object_is_a_400(body, word):
    with pytest.raises(InvalidRequestError, match=word) as raised:
        dialect.read_json("application/json", body)
    assert raised.value.status == 400


# -- answers ---------------------------------------------------------------------------------------------------------

def test_a_text_answer_is_lmis_bare_object():
    request = dialect.parse(TEXT)
    assert dialect.text_answer(request, generation(" world")) == {"generated_text": " world"}


def test_return_full_text_puts_the_prompt_first():
    request = dialect.parse(text(return_full_text=True))
    assert dialect.text_answer(request, generation(" world"))["generated_text"] == "Hello world"


def test_details_follow_lmis_schema():
    request = dialect.parse(text(details=True))
    answer = dialect.text_answer(request, generation(" world", finish="stop_sequence", prompt=4, new=2))
    assert answer == {"generated_text": " world", "details": {
        "finish_reason": "stop_sequence", "generated_tokens": 2, "inputs": "Hello", "prompt_tokens": 4}}


@pytest.mark.parametrize(("finish", "openai"), [("eos_token", "stop"), ("stop_sequence", "stop"),
                                                ("length", "length")])
def test_a_chat_answer_is_an_openai_chat_completion(finish, openai):
    answer = dialect.chat_answer(generation("Paris.", finish=finish, prompt=12, new=3), "smollm2")
    assert answer["id"].startswith("chatcmpl-")
    assert answer["object"] == "chat.completion"
    assert isinstance(answer["created"], int)
    assert answer["model"] == "smollm2"
    assert answer["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Paris."},
                                  "logprobs": None, "finish_reason": openai}]
    assert answer["usage"] == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    json.dumps(answer)


def test_every_error_has_lmis_body():
    error = BusyError("8 requests are already waiting")
    assert dialect.error_body(error) == {"error": "8 requests are already waiting", "code": 503,
                                         "error_type": "service_unavailable"}


# -- the engine's own checks (no model) ------------------------------------------------------------------------------

@pytest.mark.parametrize("fields", [{"max_new_tokens": 0}, {"temperature": 0.0}, {"top_p": 1.5}, {"top_k": 0},
                                    {"repetition_penalty": 0.0}, {"stop_sequences": ("",)}])
def test_sampling_refuses_what_no_caller_should_build(fields):
    with pytest.raises(ValueError, match=next(iter(fields))):
        Sampling(**fields)


def test_tokens_per_second_counts_the_decode_only():
    assert generation(new=11).tokens_per_second == pytest.approx(10 / 0.4)
    assert generation(new=1).tokens_per_second == 0.0


# -- the folder served -----------------------------------------------------------------------------------------------

def test_a_built_endpoint_folder_serves_its_model_under_its_name(tmp_path):
    built = tmp_path / "smollm2"
    (built / "model").mkdir(parents=True)
    (built / "model" / "config.json").write_text("{}")
    (built / "manifest.json").write_text("{}")
    assert resolve_model(built) == (built / "model", "smollm2")
    assert resolve_model(built / "model") == (built / "model", "smollm2")


def test_a_plain_folder_serves_under_its_own_name(tmp_path):
    folder = tmp_path / "tiny-lm"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert resolve_model(folder) == (folder, "tiny-lm")


def test_a_folder_without_a_model_is_refused(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"no config\.json"):
        resolve_model(tmp_path)
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model(Path(tmp_path / "missing"))
