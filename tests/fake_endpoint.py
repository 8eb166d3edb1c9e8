"""A stand-in for the large model's SageMaker endpoint, for the generate function's tests: it speaks AWS LMI's dialect
on boto3's path (``POST /endpoints/{name}/invocations``) and answers SageMaker Runtime's faults on demand, shaped as
SageMaker sends them (the error code in ``x-amzn-ErrorType``, ModelError's ``OriginalStatusCode`` and
``OriginalMessage``).

Two ways to reach it: :func:`attach` plugs it into a ``sagemaker-runtime`` client in process (botocore's
``before-send`` event: botocore builds, signs, parses and raises exactly as over HTTP, and no socket is opened, as
tests/unit requires), and :class:`EndpointServer` serves it over real HTTP on 127.0.0.1 (tests/integration). Plain
helpers, like helpers.py: standard library and botocore only."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

ENDPOINT = "ferry-llm"
LMI_PARAMETERS = frozenset({"max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty",
                            "stop_sequences", "seed", "do_sample", "return_full_text", "details"})
CHAT_FIELDS = frozenset({"messages", "max_tokens", "temperature", "top_p", "seed", "stop"})
MODEL_ERROR_TYPE = "ModelError:http://internal.amazon.com/coral/com.amazon.sagemaker/"
LOG_STREAM = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/ferry-llm"

REGION = {"region_name": "us-east-1", "aws_access_key_id": "x", "aws_secret_access_key": "x"}  # a client's, no account
BODY = {"inputs": "What is the capital of France?", "parameters": {"max_new_tokens": 4, "details": True}}


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    delay_s: float = 0.0  # the server waits this long before answering (a read timeout, over HTTP)


def _json(status: int, document: Any, headers: dict[str, str] | None = None, delay_s: float = 0.0) -> Answer:
    return Answer(status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(document).encode(),
                  delay_s)


# -- SageMaker Runtime's faults, as it sends them -------------------------------------------------------------------

def service_error(code: str, status: int, message: str = "") -> Answer:
    """An error of SageMaker Runtime itself: its code in x-amzn-ErrorType, as rest-json services send it."""
    return _json(status, {"message": message or code}, {"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/"})


def model_error(original_status: int, original: Any) -> Answer:
    """ModelError (424): the container answered `original_status` with `original` (a JSON-able body, or text)."""
    text = original if isinstance(original, str) else json.dumps(original)
    kind = "CLIENT_ERROR_FROM_MODEL" if original_status < 500 else "SERVER_ERROR_FROM_MODEL"
    return _json(424, {"ErrorCode": kind, "OriginalStatusCode": original_status, "OriginalMessage": text,
                       "LogStreamArn": LOG_STREAM,
                       "Message": f"Received {'client' if original_status < 500 else 'server'} error "
                                  f"({original_status}) from primary with message \"{text}\". See the logs."},
                 {"x-amzn-ErrorType": MODEL_ERROR_TYPE})


def throttled() -> Answer:
    return service_error("ThrottlingException", 400, "Rate exceeded")


def not_ready() -> Answer:
    return service_error("ModelNotReadyException", 429, "Model is still loading")


def slow(seconds: float) -> Answer:
    """A normal answer that comes after `seconds`."""
    return _json(200, {"generated_text": "late"}, delay_s=seconds)


# -- the endpoint ----------------------------------------------------------------------------------------------------

@dataclass
class FakeEndpoint:
    """LMI's dialect: ``{"inputs", "parameters"}`` -> ``{"generated_text", "details"?}`` (a bare object, as LMI
    answers without TGI compatibility), ``{"messages", ...}`` -> a chat.completion with usage. It refuses, as a
    container refuses (400 behind ModelError), what LMI would not take: a parameter of another dialect (``stop``),
    sampling knobs without ``do_sample``. `faults` are answered first, one a request, in order."""

    name: str = ENDPOINT
    faults: list[Answer] = field(default_factory=list)
    seen: list[Any] = field(default_factory=list)
    refused: bool = False  # no connection at all (in process: EndpointConnectionError)

    def answer(self, path: str, body: bytes) -> Answer:
        if path != f"/endpoints/{self.name}/invocations":  # what SageMaker says of an endpoint it does not have
            return service_error("ValidationError", 400, "Endpoint not found.")
        request = json.loads(body)
        self.seen.append(request)
        if self.faults:
            return self.faults.pop(0)
        if "messages" in request:
            return self._chat(request)
        return self._generate(request)

    def _generate(self, request: dict[str, Any]) -> Answer:
        parameters = request.get("parameters") or {}
        unknown = sorted(set(parameters) - LMI_PARAMETERS)
        if unknown:
            return model_error(400, {"error": f"unknown parameters: {', '.join(unknown)}", "error_type": "validation"})
        if any(name in parameters for name in ("temperature", "top_p", "top_k")) and "do_sample" not in parameters:
            return model_error(400, {"error": "sampling parameters need do_sample", "error_type": "validation"})
        prompt = request["inputs"]
        words = ["Paris", "is", "the", "capital", "of", "France", "."]
        count = min(int(parameters.get("max_new_tokens", 30)), len(words))
        stop = next((s for s in parameters.get("stop_sequences", []) if s in words[:count]), None)
        if stop is not None:
            count = words.index(stop)
        text = " ".join(words[:count])
        if parameters.get("return_full_text"):
            text = prompt + " " + text
        answer: dict[str, Any] = {"generated_text": text}
        if parameters.get("details"):
            finish = "stop_sequence" if stop else ("length" if count < len(words) else "eos_token")
            answer["details"] = {"finish_reason": finish, "generated_tokens": count, "inputs": prompt,
                                 "prompt_tokens": len(prompt.split()),
                                 "tokens": [{"id": index, "text": word, "log_prob": -0.25, "special_token": False}
                                            for index, word in enumerate(words[:count])]}
        return _json(200, answer)

    def _chat(self, request: dict[str, Any]) -> Answer:
        unknown = sorted(set(request) - CHAT_FIELDS)
        if unknown:
            return model_error(400, {"error": f"unknown fields: {', '.join(unknown)}", "error_type": "validation"})
        if not all(isinstance(message.get("content"), str) for message in request["messages"]):
            return model_error(400, {"error": "content must be a string", "error_type": "validation"})
        prompt = sum(len(message["content"].split()) for message in request["messages"])
        return _json(200, {"id": "chatcmpl-lmi", "object": "chat.completion", "created": 1_795_953_600,
                           "model": "lmi", "choices": [{"index": 0, "message": {"role": "assistant",
                                                                                  "content": "Paris."},
                                                        "logprobs": None, "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": prompt, "completion_tokens": 2, "total_tokens": prompt + 2}})


# -- in process: a sagemaker-runtime client that reaches it without a socket ------------------------------------------

def attach(client: Any, endpoint: FakeEndpoint) -> list[str]:
    """Answer `client`'s InvokeEndpoint calls from `endpoint` (botocore's before-send: the request is built and
    signed, the answer parsed and raised, as over HTTP). A fault slower than the client's read timeout raises what
    botocore raises for one; ``endpoint.refused`` raises EndpointConnectionError. Returns the list of URLs sent
    (one per attempt: botocore's own retries would show here)."""
    import urllib3
    from botocore.awsrequest import AWSResponse
    from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

    sent: list[str] = []

    def send(request: Any, **_: Any) -> AWSResponse:
        sent.append(request.url)
        if endpoint.refused:
            raise EndpointConnectionError(endpoint_url=request.url)
        answer = endpoint.answer(urlsplit(request.url).path, request.body or b"")
        if answer.delay_s > client.meta.config.read_timeout:
            raise ReadTimeoutError(endpoint_url=request.url)
        raw = urllib3.HTTPResponse(body=io.BytesIO(answer.body), headers=answer.headers, status=answer.status,
                                   preload_content=False)
        return AWSResponse(request.url, answer.status, answer.headers, raw)

    client.meta.events.register("before-send.sagemaker-runtime.InvokeEndpoint", send, unique_id="ferry-fake")
    return sent


def detach(client: Any) -> None:
    client.meta.events.unregister("before-send.sagemaker-runtime.InvokeEndpoint", unique_id="ferry-fake")


# -- over HTTP: the same endpoint on 127.0.0.1 -----------------------------------------------------------------------

class EndpointServer:
    """`endpoint` served over HTTP on 127.0.0.1 (a free port) in a thread, for a client with ``endpoint_url``."""

    def __init__(self, endpoint: FakeEndpoint):
        self.endpoint = endpoint
        fake = endpoint

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's name for it
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = fake.answer(urlsplit(self.path).path, body)
                if answer.delay_s:
                    time.sleep(answer.delay_s)
                try:
                    self.send_response(answer.status)
                    for name, value in {**answer.headers, "Content-Length": str(len(answer.body))}.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(answer.body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (its read timeout)
                    pass

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-endpoint", daemon=True)

    @contextmanager
    def running(self) -> Iterator[EndpointServer]:
        self.thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()
