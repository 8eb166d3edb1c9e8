"""Text generation by the large model on a SageMaker endpoint: the requests clients send, what the endpoint is sent,
what clients get back, and the capture record of each generation.

**Two dialects in, one endpoint out.** ``POST /v1/models/{model}/generate`` takes the Hugging Face text-generation
payload (what ``InferenceClient.text_generation`` sends: ``{"inputs", "parameters", "stream"}``, TGI's parameter
names, many of them null) and answers TGI's ``[{"generated_text", "details"?}]``. ``POST
/v1/models/{model}/v1/chat/completions`` takes an OpenAI chat body (what ``InferenceClient.chat_completion`` sends,
``"model": "dummy"`` included) and answers a ``chat.completion``. The endpoint speaks AWS LMI's dialect (DJL Serving
with vLLM): ``{"inputs", "parameters": {...}}`` -> ``{"generated_text", "details"?}``, and OpenAI chat. Where the
names differ the function translates (:func:`lmi_request`, :func:`lmi_chat_request`):

- ``stop`` (and the deprecated ``stop_sequences``) -> ``stop_sequences``;
- sampling parameters (``temperature``, ``top_p``, ``top_k``) without ``do_sample`` -> ``do_sample: true``, as TGI
  infers it and LMI does not; a client's explicit ``do_sample: false`` is kept;
- ``details: true`` always (the token counts are captured), stripped from the answer unless the client asked;
- no ``max_new_tokens`` (``max_tokens``) -> the bound, ``FERRY_GENERATE_MAX_NEW_TOKENS``, set so that an answer
  fits in API Gateway's 30 s; above the bound is a 400 that says so.

Parameters the endpoint does not serve (``grammar``, ``best_of`` over 1, ``n`` over 1, ``tools``, ``adapter_id``...)
are a 400 naming them; null means "not given" for every parameter; ``stream: true`` is a 400 (HTTP APIs cannot
stream). Nothing here imports torch or transformers: the function is boto3, pydantic and Powertools.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NamedTuple

from annotated_types import Ge, Le
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictStr,
    StringConstraints,
    create_model,
)

from ferry.runtime.api import NOT_BLANK, PREDICTION_IDS_DOC, OperationDoc, whole
from ferry.runtime.constants import CHAT_PATH, ENV_GENERATE_ENDPOINT, GENERATE_PATH, TEXT_GENERATION
from ferry.runtime.endpoint_client import EndpointClient, EndpointStatus
from ferry.runtime.exceptions import (
    EndpointError,
    ModelNotFoundError,
    PayloadTooLargeError,
    UnsupportedParameterError,
    UnsupportedTaskError,
)
from ferry.runtime.ids import PredictionIds
from ferry.runtime.settings import Settings
from ferry.runtime.telemetry import Log

ROUTE_GENERATE = "generate"  # a capture record's "route": which dialect the client spoke
ROUTE_CHAT = "chat"
CHANNEL_API = "api"  # as ferry.runtime.service's: the monitor counts a capture's latency by channel
MAX_STOP_SEQUENCES = 16
MAX_STOP_CHARS = 256
MAX_CHAT_MESSAGES = 256
MAX_SEED = 2**63 - 1  # a signed 64-bit integer: what LMI's engines and Ferry's endpoint server take
STREAMING = ("streaming is not supported on this route: API Gateway HTTP APIs cannot stream responses; send "
             '"stream": false (or leave it out) to get the whole answer at once')


Int = Annotated[int, Strict(), BeforeValidator(whole)]
# Bounded integers put their bounds before the validator, as the predict API's top_k does: after it, pydantic writes
# them into the JSON schema as "ge" and "le", keywords JSON Schema does not know, and the document states no bound.
Count = Annotated[int, Strict(), Ge(1), BeforeValidator(whole)]
Natural = Annotated[int, Strict(), Ge(0), BeforeValidator(whole)]
Seed = Annotated[int, Strict(), Ge(0), Le(MAX_SEED), BeforeValidator(whole)]
Float = Annotated[float, Strict()]  # an int is a float too; a bool or a string is neither
Stop = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=MAX_STOP_CHARS)]
Stops = Annotated[list[Stop], Field(max_length=MAX_STOP_SEQUENCES)]


# -- the Hugging Face text-generation payload ------------------------------------------------------------------------

class GenerateParameters(BaseModel):
    """TGI's generation parameters, as ``InferenceClient.text_generation`` names them (null: not given)."""

    model_config = ConfigDict(extra="forbid")
    max_new_tokens: Int | None = Field(default=None, description="at most this many new tokens (default: the bound)")
    temperature: Annotated[Float, Field(gt=0)] | None = None
    top_p: Annotated[Float, Field(gt=0, le=1)] | None = None
    top_k: Count | None = None
    repetition_penalty: Annotated[Float, Field(gt=0)] | None = None
    stop: Stops | None = Field(default=None, description="stop when one of these strings is generated")
    stop_sequences: Stops | None = Field(default=None, description="the deprecated name of stop")
    seed: Seed | None = None
    do_sample: StrictBool | None = Field(default=None, description="default: true when temperature, top_p or top_k "
                                                                    "is given, else greedy")
    return_full_text: StrictBool | None = None
    details: StrictBool | None = Field(default=None, description="add finish_reason and the tokens generated")
    # known to the dialect, not served: a 400 naming them unless null (or their neutral value)
    decoder_input_details: StrictBool | None = None
    truncate: Count | None = None
    typical_p: Annotated[Float, Field(gt=0, lt=1)] | None = None
    watermark: StrictBool | None = None
    frequency_penalty: Float | None = None
    best_of: Count | None = None
    top_n_tokens: Natural | None = None
    grammar: Any = None
    adapter_id: Any = None

    def unsupported(self) -> list[str]:
        """The parameters given that the endpoint does not serve."""
        refused = {
            "grammar": self.grammar is not None,
            "adapter_id": self.adapter_id is not None,
            "best_of": (self.best_of or 1) > 1,
            "decoder_input_details": self.decoder_input_details is True,
            "truncate": self.truncate is not None,
            "typical_p": self.typical_p is not None,
            "watermark": self.watermark is True,
            "frequency_penalty": self.frequency_penalty not in (None, 0),
            "top_n_tokens": (self.top_n_tokens or 0) > 0,
        }
        return [f"parameters.{name}" for name, given in refused.items() if given]


class GenerateRequest(BaseModel):
    """The Hugging Face text-generation payload (``InferenceClient.text_generation``)."""

    model_config = ConfigDict(extra="forbid")
    inputs: StrictStr = Field(description="the prompt")
    parameters: GenerateParameters | None = None
    stream: StrictBool | None = Field(default=None, description="must be false or absent: no streaming here")


# -- the OpenAI chat body --------------------------------------------------------------------------------------------

class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: StrictStr | list[TextPart] = Field(description="a string, or a list of text parts")
    name: StrictStr | None = None
    tool_calls: Any = None  # not served: a 400 unless null
    tool_call_id: Any = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class ChatRequest(BaseModel):
    """An OpenAI chat completion body (``InferenceClient.chat_completion``); ``model`` is accepted and ignored (the
    URL names the model; the client sends ``"dummy"``)."""

    model_config = ConfigDict(extra="forbid")
    model: StrictStr | None = Field(default=None, description="ignored: the URL names the model")
    messages: list[ChatMessage]
    max_tokens: Int | None = Field(default=None, description="at most this many new tokens (default: the bound)")
    max_completion_tokens: Int | None = Field(default=None, description="OpenAI's newer name of max_tokens")
    temperature: Annotated[Float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[Float, Field(gt=0, le=1)] | None = None
    seed: Seed | None = None
    stop: Stop | Stops | None = None
    stream: StrictBool | None = None
    n: Count | None = None
    user: StrictStr | None = None
    # known to the dialect, not served: a 400 naming them unless null (or their neutral value)
    frequency_penalty: Annotated[Float, Field(ge=-2, le=2)] | None = None
    presence_penalty: Annotated[Float, Field(ge=-2, le=2)] | None = None
    logprobs: StrictBool | None = None
    top_logprobs: Natural | None = None
    logit_bias: Any = None
    response_format: Any = None
    tools: Any = None
    tool_choice: Any = None
    tool_prompt: Any = None
    stream_options: Any = None

    def unsupported(self) -> list[str]:
        refused = {
            "n": (self.n or 1) > 1,
            "frequency_penalty": self.frequency_penalty not in (None, 0),
            "presence_penalty": self.presence_penalty not in (None, 0),
            "logprobs": self.logprobs is True,
            "top_logprobs": self.top_logprobs is not None,
            "logit_bias": self.logit_bias not in (None, {}, []),
            "response_format": self.response_format is not None,
            "tools": self.tools not in (None, []),
            "tool_choice": self.tool_choice not in (None, "none"),
            "tool_prompt": self.tool_prompt is not None,
            "stream_options": self.stream_options is not None,
        }
        names = [name for name, given in refused.items() if given]
        names += [f"messages[{index}].{field}" for index, message in enumerate(self.messages)
                  for field in ("tool_calls", "tool_call_id") if getattr(message, field) not in (None, [])]
        return names


class GenerationModels(NamedTuple):
    generate: type[GenerateRequest]
    chat: type[ChatRequest]

    def for_path(self, path: str) -> type[BaseModel]:
        return self.chat if path.rstrip("/").endswith(CHAT_PATH) else self.generate


def generation_models(settings: Settings) -> GenerationModels:
    """GenerateRequest and ChatRequest with `settings`' limits: the prompt 1 to max_input_chars characters (not only
    whitespace), a message's content at most that, new tokens 1 to generate_max_new_tokens (the OpenAPI document
    states the same bounds). Same names as the base models (the OpenAPI components)."""
    bound = settings.generate_max_new_tokens
    tokens: Any = Annotated[int, Strict(), Ge(1), Le(bound), BeforeValidator(whole)]
    described = f"at most this many new tokens, 1 to {bound} (default {bound}): an answer must fit in 30 s"
    prompt: Any = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=settings.max_input_chars,
                                                   pattern=NOT_BLANK)]
    content: Any = Annotated[str, StringConstraints(strict=True, max_length=settings.max_input_chars)]
    parameters: Any = create_model("GenerateParameters", __base__=GenerateParameters,
                                   __doc__=GenerateParameters.__doc__,
                                   max_new_tokens=(tokens | None, Field(default=None, description=described)))
    part: Any = create_model("TextPart", __base__=TextPart, text=(content, ...))
    message: Any = create_model("ChatMessage", __base__=ChatMessage, content=(
        content | list[part], Field(description="a string, or a list of text parts")))
    messages: Any = Annotated[list[message], Field(min_length=1, max_length=MAX_CHAT_MESSAGES)]
    return GenerationModels(
        generate=create_model("GenerateRequest", __base__=GenerateRequest, __doc__=GenerateRequest.__doc__,
                              inputs=(prompt, Field(description=f"the prompt, 1 to {settings.max_input_chars} "
                                                                "characters")),
                              parameters=(parameters | None, None)),
        chat=create_model("ChatRequest", __base__=ChatRequest, __doc__=ChatRequest.__doc__, messages=(messages, ...),
                          max_tokens=(tokens | None, Field(default=None, description=described)),
                          max_completion_tokens=(tokens | None, Field(default=None, description=described))),
    )


# -- translation to the endpoint's dialect (LMI) ---------------------------------------------------------------------

def lmi_request(request: GenerateRequest, max_new_tokens: int) -> dict[str, Any]:
    """The LMI body for a text-generation request: TGI's names translated (``stop`` -> ``stop_sequences``),
    ``do_sample`` inferred from the sampling parameters as TGI does, ``details`` always asked for, and
    `max_new_tokens` (the bound) when the client gave none."""
    given = request.parameters or GenerateParameters()
    parameters: dict[str, Any] = {"max_new_tokens": given.max_new_tokens or max_new_tokens, "details": True}
    for name in ("temperature", "top_p", "top_k", "repetition_penalty", "seed", "return_full_text"):
        value = getattr(given, name)
        if value is not None:
            parameters[name] = value
    stops = list(dict.fromkeys([*(given.stop or []), *(given.stop_sequences or [])]))
    if stops:
        parameters["stop_sequences"] = stops
    sampling = any(value is not None for value in (given.temperature, given.top_p, given.top_k))
    do_sample = given.do_sample if given.do_sample is not None else (True if sampling else None)
    if do_sample is not None:
        parameters["do_sample"] = do_sample
    return {"inputs": request.inputs, "parameters": parameters}


def lmi_chat_request(request: ChatRequest, max_new_tokens: int) -> dict[str, Any]:
    """The OpenAI chat body the endpoint takes: each message as its role and its content as one string (text parts
    joined; a participant's ``name`` is left out: LMI's templates do not all read it), the bound when the client gave
    no ``max_tokens``, ``stop`` as a list, and only the parameters served; ``model`` and ``user`` are left out."""
    messages = [{"role": message.role, "content": message.text()} for message in request.messages]
    body: dict[str, Any] = {"messages": messages,
                            "max_tokens": request.max_completion_tokens or request.max_tokens or max_new_tokens}
    for name in ("temperature", "top_p", "seed"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    if stops:
        body["stop"] = stops
    return body


# -- what the two routes answer, for the OpenAPI document ------------------------------------------------------------

class GeneratedToken(BaseModel):
    id: int | None
    text: str | None
    logprob: float | None
    special: bool


class GenerationDetails(BaseModel):
    finish_reason: str | None = Field(description="length (the new-token bound), stop (a stop sequence or the "
                                                  "model's end), as the endpoint says")
    generated_tokens: int | None
    seed: int | None
    prefill: list[Any]
    tokens: list[GeneratedToken]


class GeneratedText(BaseModel):
    """TGI's answer to POST /v1/models/{model}/generate: a list of one."""

    generated_text: str
    details: GenerationDetails | None = Field(default=None, description="when parameters.details is true")


class ChatCompletionMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatCompletionMessage
    logprobs: None
    finish_reason: str | None


class ChatUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    """OpenAI's ``chat.completion``: one choice; its id is the generation's prediction id."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: ChatUsage | None = Field(default=None, description="when the endpoint counted the tokens")


_GENERATION_ERRORS = (400, 404, 413, 415, 429, 502, 503, 504)
_GENERATION_NOTES = (
    (400, "invalid request: not JSON, a wrong type or value, an unknown parameter, one this endpoint does not serve "
          "(streaming, tools, ...), new tokens over the bound, or a prompt the model refused (the message says which)"),
    (413, "a prompt or a message over the character limit, or a body over the byte limit"),
    (429, "this API key's daily quota is used, API Gateway throttled the request, or the model's endpoint did "
          "(Retry-After, when given, says when to try again)"),
    (503, "the model's endpoint is not in service (being created or updated, failed, or scaled to zero)"),
)


def generation_operations(model: str, models: GenerationModels) -> dict[tuple[str, str], OperationDoc]:
    """The two routes of the generate function, for the API's OpenAPI document (the predict function serves it):
    `model` is the large model's name, `models` the request models with the function's limits."""
    path = "/v1/models/{model}"
    return {
        (path + GENERATE_PATH, "post"): OperationDoc(
            ok=list[GeneratedText], request=models.generate, errors=_GENERATION_ERRORS, notes=_GENERATION_NOTES,
            ok_headers=PREDICTION_IDS_DOC, models=(model,),
            summary="Text generation by the large model (the Hugging Face text-generation payload)"),
        (path + CHAT_PATH, "post"): OperationDoc(
            ok=ChatCompletion, request=models.chat, errors=_GENERATION_ERRORS, notes=_GENERATION_NOTES,
            ok_headers=PREDICTION_IDS_DOC, models=(model,),
            summary="A chat completion by the large model (an OpenAI chat body; no streaming)"),
    }


@dataclass(frozen=True)
class Generated:
    """What the endpoint generated, as the client gets it and as it is captured."""

    payload: Any
    text: str
    prompt_tokens: int | None
    generated_tokens: int | None
    finish_reason: str | None


def generate_answer(answer: Any, details: bool) -> Generated:
    """TGI's answer from LMI's: ``[{"generated_text", "details"?}]``, with ``details`` (finish_reason,
    generated_tokens, seed, prefill, tokens, as TGI names them) only when the client asked. LMI answers a bare
    object (a list with TGI compatibility on): both are read."""
    first = answer[0] if isinstance(answer, list) and answer else answer
    if not isinstance(first, dict) or not isinstance(first.get("generated_text"), str):
        raise EndpointError("the model's endpoint answered without generated_text; the details are in the logs")
    found: dict[str, Any] = first["details"] if isinstance(first.get("details"), dict) else {}
    finish = found.get("finish_reason", found.get("finish reason"))  # LMI's documentation spells it both ways
    generated = Generated(payload=None, text=first["generated_text"], finish_reason=_str(finish),
                          prompt_tokens=_count(found.get("prompt_tokens", found.get("input_length"))),
                          generated_tokens=_count(found.get("generated_tokens")))
    item: dict[str, Any] = {"generated_text": generated.text}
    if details and found:
        item["details"] = {"finish_reason": generated.finish_reason, "generated_tokens": generated.generated_tokens,
                           "seed": found.get("seed"), "prefill": [],
                           "tokens": [_tgi_token(token) for token in found.get("tokens") or []
                                      if isinstance(token, dict)]}
    return Generated(**{**generated.__dict__, "payload": [item]})


def chat_answer(answer: Any, *, completion_id: str, model: str, version: str, created: int) -> Generated:
    """The ``chat.completion`` a client gets from the endpoint's: its first choice's message and finish reason and
    its usage, under this API's model name, with the prediction id as the completion's id."""
    choices = answer.get("choices") if isinstance(answer, dict) else None
    choice: dict[str, Any] = (choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict)
                              else {})
    message: dict[str, Any] = choice["message"] if isinstance(choice.get("message"), dict) else {}
    if not isinstance(message.get("content"), str):
        raise EndpointError("the model's endpoint answered without a message; the details are in the logs")
    usage: dict[str, Any] = answer["usage"] if isinstance(answer.get("usage"), dict) else {}
    prompt_tokens, completion_tokens = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    payload: dict[str, Any] = {
        "id": completion_id, "object": "chat.completion", "created": _count(answer.get("created")) or created,
        "model": model, "system_fingerprint": f"{model}-{version}",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": message["content"]}, "logprobs": None,
                     "finish_reason": _str(choice.get("finish_reason"))}],
    }
    if prompt_tokens is not None and completion_tokens is not None:
        payload["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                            "total_tokens": prompt_tokens + completion_tokens}
    return Generated(payload=payload, text=message["content"], prompt_tokens=prompt_tokens,
                     generated_tokens=completion_tokens, finish_reason=_str(choice.get("finish_reason")))


def _tgi_token(token: dict[str, Any]) -> dict[str, Any]:
    """A token of LMI's details ({id, text, log_prob, special_token}) under TGI's names."""
    return {"id": token.get("id"), "text": token.get("text"), "logprob": token.get("logprob", token.get("log_prob")),
            "special": bool(token.get("special", token.get("special_token", False)))}


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# -- the service -----------------------------------------------------------------------------------------------------

def derived_version(model: str, endpoint: str | None) -> str:
    """The large model's version when FERRY_GENERATE_VERSION gives none: the first 12 hex digits of the sha256 of
    its name and its endpoint's (another endpoint, another version)."""
    return hashlib.sha256(f"{model}\n{endpoint or ''}".encode()).hexdigest()[:12]


@dataclass(frozen=True)
class GenerationAnswer:
    """One generation: the payload to return, its prediction id, and its capture record."""

    payload: Any
    prediction_id: str
    capture: dict[str, Any]
    latency_ms: float


class GenerationService:
    """Generation by the large model `settings` name (FERRY_GENERATE_MODEL) on its endpoint, with the API's limits
    and capture options. `endpoint` is the endpoint's client (default: made at first use from the settings)."""

    def __init__(self, settings: Settings, endpoint: EndpointClient | None = None, *, logger: Log | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        self.settings = settings
        self.model = settings.generate_model
        self.version = settings.generate_version or derived_version(self.model or "", settings.generate_endpoint)
        self._secret = settings.stack_secret.encode("utf-8") if settings.stack_secret else None
        self.ids = PredictionIds(self._secret)
        self.logger, self.clock = logger, clock
        self._endpoint = endpoint

    @property
    def endpoint(self) -> EndpointClient:
        if self._endpoint is None:
            self._endpoint = EndpointClient(self.settings.generate_endpoint or "", logger=self.logger,
                                            timeout_s=self.settings.generate_timeout_s)
        return self._endpoint

    def check_model(self, model: str) -> None:
        """404 unless `model` is the large model this deployment serves."""
        if self.model is None:
            raise ModelNotFoundError(f"no text-generation model {model!r}: this deployment serves none")
        if model != self.model:
            raise ModelNotFoundError(f"no text-generation model {model!r}; this deployment serves {self.model!r}")

    def generate(self, model: str, request: GenerateRequest, *, key_id: str | None = None,
                 deadline: float | None = None) -> GenerationAnswer:
        """POST /v1/models/{model}/generate: `request` generated by the endpoint, answered as TGI answers."""
        self.check_model(model)
        parameters = request.parameters or GenerateParameters()
        self._refuse(request.stream, parameters.unsupported())
        body = lmi_request(request, self.settings.generate_max_new_tokens)
        started = self.clock()
        invocation = self.endpoint.invoke(body, deadline=deadline)
        generated = generate_answer(invocation.body, details=parameters.details is True)
        return self._answer(generated, ROUTE_GENERATE, request.inputs, body["parameters"]["max_new_tokens"],
                            started, invocation.latency_ms, invocation.retries, key_id)

    def chat(self, model: str, request: ChatRequest, *, key_id: str | None = None,
             deadline: float | None = None) -> GenerationAnswer:
        """POST /v1/models/{model}/v1/chat/completions: `request` completed by the endpoint, as a chat.completion."""
        self.check_model(model)
        self._refuse(request.stream, request.unsupported())
        body = lmi_chat_request(request, self.settings.generate_max_new_tokens)
        characters = sum(len(message["content"]) for message in body["messages"])
        if characters > self.settings.max_input_chars:
            raise PayloadTooLargeError(f"messages have {characters} characters in all; at most "
                                       f"{self.settings.max_input_chars} are accepted")
        prediction_id = self.ids.issue(self.model or model, self.version)
        started = self.clock()
        invocation = self.endpoint.invoke(body, deadline=deadline)
        generated = chat_answer(invocation.body, completion_id=prediction_id, model=self.model or model,
                                version=self.version, created=int(time.time()))
        conversation = json.dumps(body["messages"], ensure_ascii=False, separators=(",", ":"))
        return self._answer(generated, ROUTE_CHAT, conversation, body["max_tokens"], started,
                            invocation.latency_ms, invocation.retries, key_id, prediction_id)

    @staticmethod
    def _refuse(stream: bool | None, unsupported: Sequence[str]) -> None:
        if stream:
            raise UnsupportedParameterError(STREAMING)
        if unsupported:
            names = ", ".join(unsupported)
            raise UnsupportedParameterError(f"not supported by this model's endpoint: {names}; leave "
                                            f"{'it' if len(unsupported) == 1 else 'them'} out (or null)")

    def _answer(self, generated: Generated, route: str, prompt: str, max_new_tokens: int, started: float,
                endpoint_latency_ms: float, retries: int, key_id: str | None,
                prediction_id: str | None = None) -> GenerationAnswer:
        latency_ms = (self.clock() - started) * 1000
        model = self.model or ""
        prediction_id = prediction_id or self.ids.issue(model, self.version)
        record = generation_record(
            prediction_id=prediction_id, model=model, version=self.version, route=route, time=datetime.now(UTC),
            latency_ms=latency_ms, endpoint_latency_ms=endpoint_latency_ms, prompt=prompt, answer=generated.text,
            prompt_tokens=generated.prompt_tokens, generated_tokens=generated.generated_tokens,
            finish_reason=generated.finish_reason, max_new_tokens=max_new_tokens, retries=retries,
            keep_text=self.settings.capture_text, secret=self._secret, key_id=key_id)
        return GenerationAnswer(generated.payload, prediction_id, record, latency_ms)


def generation_record(
    *, prediction_id: str, model: str, version: str, route: str, time: datetime, latency_ms: float,
    endpoint_latency_ms: float, prompt: str, answer: str, prompt_tokens: int | None, generated_tokens: int | None,
    finish_reason: str | None, max_new_tokens: int, retries: int = 0, keep_text: bool = False,
    secret: bytes | None = None, key_id: str | None = None,
) -> dict[str, Any]:
    """One generation as the capture function stores it (keyed by its prediction id, like a classifier's): never
    the prompt or the answer unless FERRY_CAPTURE_TEXT says so. ``text_hmac`` is HMAC-SHA256 of the prompt (a chat's:
    its messages as compact JSON) under the stack's secret, as :func:`ferry.runtime.service.capture_record` makes
    it; ``task`` is ``text-generation``, which the monitor's readers of classifier captures never ask for (it
    queries by model and version, and serves the models of its layers only)."""
    record: dict[str, Any] = {
        "prediction_id": prediction_id,
        "model": model,
        "version": version,
        "task": TEXT_GENERATION,
        "route": route,
        "time": time.isoformat(timespec="milliseconds"),
        "epoch_ms": int(time.timestamp() * 1000),
        "latency_ms": round(latency_ms, 3),
        "endpoint_latency_ms": round(endpoint_latency_ms, 3),
        "batch_size": 1,
        "channel": CHANNEL_API,
        "prompt_chars": len(prompt),
        "max_new_tokens": max_new_tokens,
    }
    for name, value in (("prompt_tokens", prompt_tokens), ("generated_tokens", generated_tokens),
                        ("finish_reason", finish_reason)):
        if value is not None:
            record[name] = value
    if retries:
        record["endpoint_retries"] = retries
    if secret is not None:
        record["text_hmac"] = hmac.new(secret, prompt.encode("utf-8"), hashlib.sha256).hexdigest()
    if key_id is not None:
        record["key_id"] = key_id
    if keep_text:
        record["text"] = prompt
        record["generated_text"] = answer
    return record


# -- what the predict function lists ---------------------------------------------------------------------------------

class GenerationCatalog:
    """The large model as the predict function shows it (GET /v1/models, GET /v1/models/{model}) and refuses it
    (POST /v1/models/{model}/predict): its name, task, version, bound and endpoint with its status, read from a
    cached DescribeEndpoint whose client is made at the first listing (the predict function's cold start never
    pays for it). A status that cannot be read is shown as ``Unknown (...)``: a listing never fails for it."""

    def __init__(self, settings: Settings, status: EndpointStatus | None = None):
        self.settings = settings
        self.model = settings.generate_model
        self.version = settings.generate_version or derived_version(self.model or "", settings.generate_endpoint)
        self._status = status

    def serves(self, name: str) -> bool:
        return self.model is not None and name == self.model

    def status(self) -> str:
        if not self.settings.generate_endpoint:
            return f"Unknown ({ENV_GENERATE_ENDPOINT} is not set)"
        if self._status is None:
            self._status = EndpointStatus(self.settings.generate_endpoint)
        return self._status.current()

    def summaries(self) -> list[dict[str, Any]]:
        return [] if self.model is None else [self.describe(self.model)]

    def describe(self, name: str) -> dict[str, Any]:
        if not self.serves(name):
            raise ModelNotFoundError(f"no model {name!r}")
        return {"name": name, "task": TEXT_GENERATION, "version": self.version,
                "max_new_tokens": self.settings.generate_max_new_tokens,
                "endpoint": {"name": self.settings.generate_endpoint, "status": self.status()}}

    def wrong_route(self, name: str) -> UnsupportedTaskError:
        """The error for a classifier's or an embedder's route asked of the large model."""
        base = f"/v1/models/{name}"
        return UnsupportedTaskError(f"{name!r} is a {TEXT_GENERATION} model: POST {base}{GENERATE_PATH} (Hugging Face "
                                    f"text generation) or {base}{CHAT_PATH} (OpenAI chat completions)")
