"""The wire dialect of AWS's LMI container (DJL Serving): request bodies read and validated, answers shaped.

Two request shapes reach ``/invocations``, told apart as LMI tells them, by the presence of ``messages``:

- text generation, ``{"inputs": str, "parameters": {...}, "stream": false}`` -> ``{"generated_text": str}``, plus
  ``details`` (``finish_reason``, ``generated_tokens``, ``inputs``, and Ferry's ``prompt_tokens``) when asked for;
- an OpenAI chat completion, ``{"messages": [...], "max_tokens": ...}`` -> a ``chat.completion`` object.

Where LMI passes a parameter it does not know to the engine or drops it, this module refuses it with a 400 that
names it: a misspelt ``max_new_token`` silently ignored costs a client more than an error does. ``null`` is taken as
"not given" (OpenAI clients send nulls for what they leave out). Sampling is on when ``do_sample`` says so or, as
in LMI 0.32 and later, when a sampling parameter is given without it; an OpenAI request samples when its
temperature is over 0. Everything else is greedy, so that the same request gets the same answer.

Errors have LMI's body, ``{"error": message, "code": status}``, with TGI's ``error_type`` beside it (a stable name
a client can branch on without reading the message).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ferry.endpoint.engine import FINISH_LENGTH, Generation, Sampling
from ferry.endpoint.exceptions import (
    EndpointError,
    InvalidRequestError,
    UnsupportedFeatureError,
    UnsupportedMediaTypeError,
)

MAX_BODY_BYTES = 6 * 1024 * 1024  # SageMaker's InvokeEndpoint limit: the container never sees more
MAX_NEW_TOKENS = 2048  # a server's bound on one request's new tokens (the model's context bounds it further)
MAX_STOPS = 16  # stop strings a request may give
MAX_STOP_CHARS = 256  # characters a stop string may have
MAX_SEED = 2**63 - 1
DEFAULT_MAX_NEW_TOKENS = 64  # what LMI calls max_new_tokens when a request leaves it out (LMI: 30; OpenAI: no bound)
CHAT_ROLES = ("system", "user", "assistant")
ONLY_AT_DEFAULT = ("n", "frequency_penalty", "presence_penalty", "logprobs")  # OpenAI's, taken at their default only


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server."""

    max_new_tokens: int = MAX_NEW_TOKENS
    max_body_bytes: int = MAX_BODY_BYTES

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.max_body_bytes < 1:
            raise ValueError("limits must be positive")


@dataclass(frozen=True)
class TextRequest:
    """An LMI text-generation request, validated."""

    inputs: str
    sampling: Sampling
    return_full_text: bool = False
    details: bool = False


@dataclass(frozen=True)
class ChatRequest:
    """An OpenAI chat-completion request, validated."""

    messages: tuple[dict[str, str], ...]
    sampling: Sampling


# -- reading a body --------------------------------------------------------------------------------------------------

def read_json(content_type: str | None, body: bytes) -> dict[str, Any]:
    """The JSON object in `body`. A missing content type is taken as JSON (boto3 sends none unless told), any other
    than JSON is refused with 415: LMI's handlers read only JSON, and a form-encoded ``curl -d`` should fail loudly."""
    media = (content_type or "application/json").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise UnsupportedMediaTypeError(f"content type {media!r} is not supported: send application/json")
    try:
        document = json.loads(body.decode("utf-8"))  # json.loads would guess UTF-16 and -32 too: RFC 8259 says UTF-8
    except UnicodeDecodeError:
        raise InvalidRequestError("the body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")\
            from None
    if not isinstance(document, dict):
        raise InvalidRequestError(f"the body must be a JSON object, not {_json_type(document)}")
    return document


def parse(document: Mapping[str, Any], limits: Limits = Limits()) -> TextRequest | ChatRequest:
    """The request `document` holds, as LMI tells them apart: a body with ``messages`` is a chat completion."""
    if "messages" in document:
        return parse_chat(document, limits)
    return parse_text(document, limits)


# -- text generation -------------------------------------------------------------------------------------------------

def parse_text(document: Mapping[str, Any], limits: Limits = Limits()) -> TextRequest:
    given = _given(document)
    _refuse_unknown(given, ("inputs", "parameters", "stream"), "")
    _refuse_streaming(given)
    inputs = given.get("inputs")
    if inputs is None:
        raise InvalidRequestError("is required: the prompt, as a string", field="inputs")
    if not isinstance(inputs, str):
        raise InvalidRequestError(f"must be a string, not {_json_type(inputs)} (this server takes one prompt a "
                                  "request)", field="inputs")
    if not inputs:
        raise InvalidRequestError("must not be empty", field="inputs")
    raw = given.get("parameters", {})
    if not isinstance(raw, dict):
        raise InvalidRequestError(f"must be an object, not {_json_type(raw)}", field="parameters")
    parameters = _checked(_given(raw), _text_rules(limits), "parameters.")
    sampled = ("temperature", "top_p", "top_k")
    do_sample = parameters.pop("do_sample", any(name in parameters for name in sampled))
    flags = {name: parameters.pop(name, False) for name in ("return_full_text", "details")}
    stops = tuple(parameters.pop("stop_sequences", ()))
    sampling = Sampling(**{"max_new_tokens": DEFAULT_MAX_NEW_TOKENS, **parameters}, stop_sequences=stops,
                        do_sample=do_sample)
    return TextRequest(inputs=inputs, sampling=sampling, **flags)


def text_answer(request: TextRequest, generation: Generation) -> dict[str, Any]:
    """LMI's answer: a bare object (LMI without ``tgi_compat``), ``details`` only when asked for."""
    text = request.inputs + generation.text if request.return_full_text else generation.text
    answer: dict[str, Any] = {"generated_text": text}
    if request.details:
        answer["details"] = {"finish_reason": generation.finish_reason,
                             "generated_tokens": generation.generated_tokens,
                             "inputs": request.inputs,
                             "prompt_tokens": generation.prompt_tokens}
    return answer


def _text_rules(limits: Limits) -> dict[str, Callable[[str, Any], Any]]:
    return {
        "max_new_tokens": _whole(1, limits.max_new_tokens),
        "temperature": _positive,
        "top_p": _probability,
        "top_k": _whole(1, None),
        "repetition_penalty": _positive,
        "stop_sequences": _stops(allow_one=False),
        "seed": _whole(0, MAX_SEED),
        "do_sample": _boolean,
        "return_full_text": _boolean,
        "details": _boolean,
    }


# -- OpenAI chat completions -----------------------------------------------------------------------------------------

def parse_chat(document: Mapping[str, Any], limits: Limits = Limits()) -> ChatRequest:
    given = _given(document)
    _refuse_streaming(given)
    given.pop("stream", None)
    given.pop("model", None)  # huggingface_hub sends "dummy"; this server has one model
    messages = _messages(given.pop("messages", None))
    parameters = _checked(given, _chat_rules(limits), "")
    if "max_tokens" in parameters and "max_completion_tokens" in parameters:
        raise InvalidRequestError("give max_tokens or max_completion_tokens, not both", field="max_tokens")
    max_tokens = parameters.pop("max_tokens", parameters.pop("max_completion_tokens", DEFAULT_MAX_NEW_TOKENS))
    for name in ONLY_AT_DEFAULT:  # checked: nothing to pass on
        parameters.pop(name, None)
    temperature = parameters.pop("temperature", None)
    sampling = Sampling(max_new_tokens=max_tokens, stop_sequences=parameters.pop("stop", ()),
                        temperature=temperature or None, do_sample=bool(temperature), **parameters)
    return ChatRequest(messages=messages, sampling=sampling)


def chat_answer(generation: Generation, model: str) -> dict[str, Any]:
    """An OpenAI ``chat.completion``: a stop sequence and the end of the answer are both ``stop``, as in OpenAI."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": generation.text},
            "logprobs": None,
            "finish_reason": "length" if generation.finish_reason == FINISH_LENGTH else "stop",
        }],
        "usage": {"prompt_tokens": generation.prompt_tokens, "completion_tokens": generation.generated_tokens,
                  "total_tokens": generation.prompt_tokens + generation.generated_tokens},
    }


def _chat_rules(limits: Limits) -> dict[str, Callable[[str, Any], Any]]:
    return {
        "max_tokens": _whole(1, limits.max_new_tokens),
        "max_completion_tokens": _whole(1, limits.max_new_tokens),
        "temperature": _number(0, 2),
        "top_p": _probability,
        "top_k": _whole(1, None),
        "repetition_penalty": _positive,
        "stop": _stops(allow_one=True),
        "seed": _whole(0, MAX_SEED),
        "n": _only(1, "this server answers with one choice"),
        "frequency_penalty": _only(0, "penalties are not supported (repetition_penalty is)"),
        "presence_penalty": _only(0, "penalties are not supported (repetition_penalty is)"),
        "logprobs": _only(False, "log probabilities are not returned by this server"),
    }


def _messages(value: Any) -> tuple[dict[str, str], ...]:
    if not isinstance(value, list) or not value:
        raise InvalidRequestError("must be a non-empty list of {role, content} objects", field="messages")
    messages = []
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise InvalidRequestError(f"must be an object, not {_json_type(message)}", field=where)
        extra = sorted(set(message) - {"role", "content"})
        if extra:
            raise InvalidRequestError(f"has unknown keys {', '.join(extra)}: a message is role and content",
                                      field=where)
        role, content = message.get("role"), message.get("content")
        if role not in CHAT_ROLES:
            raise InvalidRequestError(f"must be one of {', '.join(CHAT_ROLES)}, not {json.dumps(role)}",
                                      field=f"{where}.role")
        if not isinstance(content, str):
            raise InvalidRequestError(f"must be a string, not {_json_type(content)}", field=f"{where}.content")
        messages.append({"role": role, "content": content})
    return tuple(messages)


# -- errors ----------------------------------------------------------------------------------------------------------

def error_body(error: EndpointError) -> dict[str, Any]:
    """LMI's error body, with TGI's ``error_type``."""
    return {"error": str(error), "code": error.status, "error_type": error.code}


# -- checks ----------------------------------------------------------------------------------------------------------

def _given(document: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of `document` that have a value: null is "not given"."""
    return {key: value for key, value in document.items() if value is not None}


def _refuse_unknown(given: Mapping[str, Any], known: Any, prefix: str) -> None:
    unknown = sorted(set(given) - set(known))
    if unknown:
        hint = "; stop strings are stop_sequences" if "stop" in unknown and "stop_sequences" in known else ""
        others = f" (and {', '.join(prefix + name for name in unknown[1:])})" if len(unknown) > 1 else ""
        raise InvalidRequestError(f"is not a parameter this server takes{others}{hint}; it takes "
                                  f"{', '.join(known)}", field=prefix + unknown[0])


def _refuse_streaming(given: Mapping[str, Any]) -> None:
    stream = given.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequestError(f"must be true or false, not {_json_type(stream)}", field="stream")
    if stream:
        raise UnsupportedFeatureError("streaming is not supported by this server: send stream false or leave it out",
                                      field="stream")


def _checked(given: dict[str, Any], rules: Mapping[str, Callable[[str, Any], Any]], prefix: str) -> dict[str, Any]:
    """`given`'s values checked and converted by the rule of each; a key without one is refused."""
    _refuse_unknown(given, rules, prefix)
    return {name: rules[name](prefix + name, value) for name, value in given.items() if name in rules}


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    names = {str: "a string", list: "a list", dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _whole(low: int, high: int | None) -> Callable[[str, Any], int]:
    def check(name: str, value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidRequestError(f"must be a whole number, not {_json_type(value)}", field=name)
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise InvalidRequestError(f"must be {bounds}, not {value}", field=name)
        return value

    return check


def _number(low: float, high: float) -> Callable[[str, Any], float]:
    def check(name: str, value: Any) -> float:
        if not _is_number(value):
            raise InvalidRequestError(f"must be a number, not {_json_type(value)}", field=name)
        if not low <= value <= high:
            raise InvalidRequestError(f"must be from {low:g} to {high:g}, not {value}", field=name)
        return float(value)

    return check


def _positive(name: str, value: Any) -> float:
    if not _is_number(value):
        raise InvalidRequestError(f"must be a number, not {_json_type(value)}", field=name)
    if value <= 0:
        raise InvalidRequestError(f"must be over 0, not {value}", field=name)
    return float(value)


def _probability(name: str, value: Any) -> float:
    if not _is_number(value):
        raise InvalidRequestError(f"must be a number, not {_json_type(value)}", field=name)
    if not 0 < value <= 1:
        raise InvalidRequestError(f"must be over 0 and at most 1, not {value}", field=name)
    return float(value)


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequestError(f"must be true or false, not {_json_type(value)}", field=name)
    return value


def _only(allowed: Any, why: str) -> Callable[[str, Any], None]:
    """A parameter of the protocol that this server takes only at its default (what clients send by habit)."""
    def check(name: str, value: Any) -> None:
        same = value == allowed if _is_number(value) and _is_number(allowed) else value is allowed
        if not same:
            raise UnsupportedFeatureError(f"must be {json.dumps(allowed)} or left out: {why}", field=name)

    return check


def _stops(allow_one: bool) -> Callable[[str, Any], tuple[str, ...]]:
    def check(name: str, value: Any) -> tuple[str, ...]:
        if allow_one and isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(stop, str) for stop in value):
            kind = "a string or a list of strings" if allow_one else "a list of strings"
            raise InvalidRequestError(f"must be {kind}, not {_json_type(value)}", field=name)
        if len(value) > MAX_STOPS:
            raise InvalidRequestError(f"may hold at most {MAX_STOPS} strings, not {len(value)}", field=name)
        if any(not stop or len(stop) > MAX_STOP_CHARS for stop in value):
            raise InvalidRequestError(f"strings must have 1 to {MAX_STOP_CHARS} characters", field=name)
        return tuple(value)

    return check
