"""The endpoint server: one :class:`~ferry.endpoint.engine.Engine` behind a threaded HTTP server that plays two
parts at once, so that every client of a SageMaker endpoint can be pointed at it unchanged.

- The container (what SageMaker calls inside the endpoint, and what LMI serves): ``GET /ping``, ``POST
  /invocations`` (both dialects of :mod:`ferry.endpoint.dialect`) and ``POST /v1/chat/completions`` (where
  ``huggingface_hub.InferenceClient(model=URL).chat_completion`` posts). Errors are LMI's body with the container's
  status.
- The SageMaker runtime service (what ``boto3.client("sagemaker-runtime", endpoint_url=URL)`` calls): ``POST
  /endpoints/{name}/invocations``. It answers to one endpoint name, and its errors are that service's REST-JSON
  errors as botocore parses them (``x-amzn-ErrorType`` and a JSON body with ``message``): an unknown endpoint is a
  400 ``ValidationError``; a container error is a 424 ``ModelError`` carrying the container's status and body; a
  body over 6 MB a bare 413, as SageMaker's front door answers; a full queue a 400 ``ThrottlingException``
  (``ThrottlingException`` with 400 is what botocore's retry handlers, legacy and standard, classify as throttling,
  and SageMaker's runtime throttles with it); a model still loading a 429 ``ModelNotReadyException``.

The model loads in the background when :func:`serve` is given a folder: the socket listens at once (a port in use
fails at once, not after the load), ``/ping`` answers 503 until the model is ready, as a container that SageMaker
would not yet send traffic to, and invocations meanwhile get 503 (the container) or ``ModelNotReadyException``.

Generation is one at a time (the engine's lock); up to ``max_waiting`` more requests wait for it, and any beyond
that are refused at once rather than queued behind minutes of work: a client that waits 30 s (API Gateway) gains
nothing from a place in a long queue. Each request is logged as one line on the ``ferry.endpoint`` logger; an
unexpected error is a 500 with a generic message for the client and the traceback in the log.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ferry.endpoint import dialect
from ferry.endpoint.engine import Engine, Generation
from ferry.endpoint.exceptions import (
    BodyTooLargeError,
    BusyError,
    EndpointError,
    InvalidRequestError,
    ListenError,
    ModelNotFoundError,
    NotReadyError,
)

log = logging.getLogger("ferry.endpoint")

DEFAULT_HOST = "127.0.0.1"  # this machine only
DEFAULT_PORT = 8080  # the port SageMaker calls a container on
DEFAULT_MAX_WAITING = 8  # requests that may wait behind the one generating
ACCOUNT_ID = "123456789012"  # the account the runtime's messages name (an AWS documentation example)
REGION = "us-east-1"
CONTAINER_NAME = "primary"  # how SageMaker's messages name the (single) container of an endpoint
VARIANT_NAME = "AllTraffic"  # SageMaker's default production variant
ERROR_TYPE_SUFFIX = ":http://internal.amazon.com/coral/com.amazon.sagemaker/"  # as the runtime service sends it
MAX_DISCARDED_BYTES = 64 * 1024 * 1024  # the most of an unwanted body read to answer it cleanly
GENERIC_ERROR = "the server failed to answer this request; its log says why"


def resolve_model(path: Path) -> tuple[Path, str]:
    """The Hugging Face folder to load from `path`, and the endpoint name it is served under by default. `path` is
    either what the packaging step writes (``build/endpoints/<name>/`` holding ``model/``) or a plain HF folder."""
    path = Path(path)
    if (path / "model" / "config.json").is_file():
        return path / "model", path.resolve().name
    if (path / "config.json").is_file():
        packaged = path.name == "model" and (path.parent / "manifest.json").is_file()
        return path, (path.resolve().parent if packaged else path.resolve()).name
    if not path.exists():
        raise ModelNotFoundError(f"{path} does not exist")
    raise ModelNotFoundError(f"{path} holds no model: no config.json in it or in {path / 'model'}")


@dataclass
class _Model:
    """The engine once loaded, and the queue in front of it."""

    max_waiting: int
    engine: Engine | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._slots = threading.BoundedSemaphore(1 + self.max_waiting)

    def set(self, engine: Engine | None, error: BaseException | None = None) -> None:
        self.engine, self.error = engine, error
        self.done.set()

    def run(self, request: dialect.TextRequest | dialect.ChatRequest) -> Generation:
        engine = self.engine
        if engine is None:
            raise NotReadyError("the model failed to load" if self.done.is_set() else "the model is still loading")
        if not self._slots.acquire(blocking=False):
            raise BusyError(f"{self.max_waiting} requests are already waiting for the model: try again later")
        try:
            if isinstance(request, dialect.ChatRequest):
                return engine.chat(list(request.messages), request.sampling)
            return engine.generate(request.inputs, request.sampling)
        finally:
            self._slots.release()


class EndpointServer(ThreadingHTTPServer):
    """The running server (see the module's docstring). Build it with :func:`serve`."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], endpoint_name: str, limits: dialect.Limits, max_waiting: int):
        self.endpoint_name = endpoint_name
        self.limits = limits
        self.model = _Model(max_waiting)
        super().__init__(address, _Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}"

    @property
    def ready(self) -> bool:
        return self.model.engine is not None

    @property
    def engine(self) -> Engine | None:
        return self.model.engine

    def wait_ready(self, timeout: float | None = None) -> Engine:
        """The engine once loaded; raises the load's error if it failed, TimeoutError after `timeout` seconds."""
        if not self.model.done.wait(timeout):
            raise TimeoutError(f"the model did not load in {timeout} s")
        if self.model.error is not None:
            raise self.model.error
        assert self.model.engine is not None
        return self.model.engine

    def start(self) -> EndpointServer:
        # a short poll: shutdown() waits for the loop to see it
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="ferry-endpoint", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and close the socket. A generation under way finishes in its daemon thread."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()

    def __exit__(self, *_: object) -> None:  # `with serve(...) as server:` stops it at the end
        self.stop()

    def load_in_background(self, model_dir: Path, device: str | None = None, threads: int | None = None) -> None:
        def load() -> None:
            try:
                engine = Engine.load(model_dir, device=device, threads=threads)
            except BaseException as exc:  # every failure must reach wait_ready, not die with the thread
                log.error("the model in %s failed to load: %s", model_dir, exc)
                self.model.set(None, exc)
                return
            log.info("loaded %s in %.1f s (%s, %s, context %d tokens)", model_dir, engine.load_seconds,
                     engine.device, engine.dtype, engine.context_length)
            self.model.set(engine)

        threading.Thread(target=load, name="ferry-endpoint-load", daemon=True).start()


def serve(model: Engine | Path, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          endpoint_name: str | None = None, limits: dialect.Limits | None = None,
          max_waiting: int = DEFAULT_MAX_WAITING, device: str | None = None,
          threads: int | None = None) -> EndpointServer:
    """Serve `model` (a loaded engine, or a folder that :func:`resolve_model` accepts, loaded in the background) on
    `host`:`port` (0: any free port) and return the running server; ``.stop()`` stops it. `device` and `threads`
    are :meth:`Engine.load`'s, for a folder.

    Raises ModelNotFoundError for a folder with no model in it and ListenError when the address cannot be listened
    on, before anything runs.
    """
    if isinstance(model, Engine):
        model_dir, name = model.model_dir, resolve_model(model.model_dir)[1]
    else:
        model_dir, name = resolve_model(model)
    try:
        server = EndpointServer((host, port), endpoint_name or name, limits or dialect.Limits(), max_waiting)
    except OSError as exc:
        raise ListenError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    if isinstance(model, Engine):
        server.model.set(model)
    else:
        server.load_in_background(model_dir, device=device, threads=threads)
    return server.start()


# -- HTTP ------------------------------------------------------------------------------------------------------------

@dataclass
class _Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    note: str = ""  # what the request's log line adds


class _Handler(BaseHTTPRequestHandler):
    server: EndpointServer
    protocol_version = "HTTP/1.1"
    server_version = "ferry-endpoint"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # each request is logged once, with its outcome, by _finish

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors the HTTP layer makes (a malformed request line, a method no route has) as JSON, not HTML."""
        self.close_connection = True
        self._send(_Answer(code, {"error": message or "bad request", "code": code, "error_type": "http_error"}))

    def do_GET(self) -> None:
        started = time.perf_counter()
        if urlsplit(self.path).path != "/ping":
            self._finish(started, _not_found(self.path))
            return
        ready = self.server.ready
        self._finish(started, _Answer(200 if ready else 503, {"status": "Healthy" if ready else "Unhealthy"}))

    def do_POST(self) -> None:
        started = time.perf_counter()
        path = urlsplit(self.path).path
        runtime = _runtime_endpoint(path)
        if path not in ("/invocations", "/v1/chat/completions") and runtime is None:
            self._discard_body()
            self._finish(started, _not_found(self.path))
            return
        if runtime is not None:
            answer = self._runtime(runtime)
        else:
            answer = self._container(chat_only=path == "/v1/chat/completions")
        self._finish(started, answer)

    def _method_not_allowed(self) -> None:
        self._discard_body()
        self._finish(time.perf_counter(), _Answer(405, {"error": f"{self.command} is not allowed here", "code": 405,
                                                        "error_type": "method_not_allowed"}))

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _method_not_allowed

    # -- the container --

    def _container(self, chat_only: bool = False) -> _Answer:
        """The container's answer: LMI's answer or LMI's error body, never a traceback."""
        try:
            body = self._body()
            document = dialect.read_json(self.headers.get("Content-Type"), body)
            if chat_only and "messages" not in document:
                raise InvalidRequestError("is required: this path takes OpenAI chat completions", field="messages")
            request = dialect.parse(document, self.server.limits)
            generation = self.server.model.run(request)
        except EndpointError as exc:
            return _Answer(exc.status, dialect.error_body(exc), note=f"{exc.code}: {exc}")
        except Exception:
            log.exception("%s %s failed", self.command, self.path)
            return _Answer(500, {"error": GENERIC_ERROR, "code": 500, "error_type": "internal_error"},
                           note="internal error (traceback above)")
        if isinstance(request, dialect.ChatRequest):
            body_out = dialect.chat_answer(generation, self.server.endpoint_name)
        else:
            body_out = dialect.text_answer(request, generation)
        return _Answer(200, body_out, note=_summary(generation))

    # -- the SageMaker runtime service --

    def _runtime(self, name: str) -> _Answer:
        request_id = str(uuid.uuid4())
        if name != self.server.endpoint_name:
            self._discard_body()
            answer = _runtime_error(400, "ValidationError", f"Endpoint {name} of account {ACCOUNT_ID} not found.")
        elif self._declared_length() > self.server.limits.max_body_bytes:
            self._discard_body()
            answer = _Answer(413, {"message": f"HTTP content length exceeded {self.server.limits.max_body_bytes} "
                                              "bytes."}, note="body too large")
        else:
            answer = self._wrapped(self._container(), name)
        answer.headers["x-amzn-RequestId"] = request_id
        return answer

    def _wrapped(self, answer: _Answer, name: str) -> _Answer:
        """The container's answer as the runtime passes it on: a success as it is, an error inside a ModelError."""
        if answer.status == 200:
            answer.headers["x-Amzn-Invoked-Production-Variant"] = VARIANT_NAME
            return answer
        kind = answer.body.get("error_type")
        if kind == BusyError.code:
            return _runtime_error(400, "ThrottlingException", "Rate exceeded", note=answer.note)
        if kind == NotReadyError.code:
            return _runtime_error(429, "ModelNotReadyException", f"Model for endpoint {name} is not ready: "
                                  f"{answer.body.get('error')}", note=answer.note)
        original = json.dumps(answer.body)
        side = "client" if answer.status < 500 else "server"
        group = f"/aws/sagemaker/Endpoints/{name}"
        message = (f'Received {side} error ({answer.status}) from {CONTAINER_NAME} with message "{original}". See '
                   f"https://{REGION}.console.aws.amazon.com/cloudwatch/home?region={REGION}#logEventViewer:"
                   f"group={group} in account {ACCOUNT_ID} for more information.")
        return _runtime_error(424, "ModelError", message, note=answer.note, OriginalStatusCode=answer.status,
                              OriginalMessage=original,
                              LogStreamArn=f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:{group}")

    # -- the wire --

    def _declared_length(self) -> int:
        """The body's length as Content-Length says (0 without one; a value that is not a length is refused by
        :meth:`_body`, which reads nothing then)."""
        value = (self.headers.get("Content-Length") or "0").strip()
        return int(value) if value.isascii() and value.isdigit() else 0

    def _body(self) -> bytes:
        value = (self.headers.get("Content-Length") or "0").strip()
        if not (value.isascii() and value.isdigit()):
            self.close_connection = True
            raise InvalidRequestError(f"Content-Length {value!r} is not a length")
        length = int(value)
        if length > self.server.limits.max_body_bytes:
            self._discard_body()
            raise BodyTooLargeError(f"the body is {length} bytes: at most {self.server.limits.max_body_bytes}")
        return self.rfile.read(length) if length else b""

    def _discard_body(self) -> None:
        """Read a body that will not be used, so that the client, still sending it, gets to read the answer (a
        server that answers and closes mid-body leaves most clients with a broken pipe instead of the 413). A body
        beyond :data:`MAX_DISCARDED_BYTES` is not worth reading: the connection is closed on it."""
        length = self._declared_length()
        if length > MAX_DISCARDED_BYTES:
            self.close_connection = True
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                self.close_connection = True
                return
            length -= len(chunk)

    def _finish(self, started: float, answer: _Answer) -> None:
        self._send(answer)
        milliseconds = (time.perf_counter() - started) * 1000
        log.info("%s %s %d %.0f ms%s", self.command, self.path, answer.status, milliseconds,
                 f" {answer.note}" if answer.note else "")

    def _send(self, answer: _Answer) -> None:
        data = json.dumps(answer.body).encode()
        self.send_response(answer.status)
        headers = {"Content-Type": "application/json", **answer.headers, "Content-Length": str(len(data))}
        for key, value in headers.items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def _runtime_endpoint(path: str) -> str | None:
    """The endpoint name of a runtime path, ``/endpoints/{name}/invocations``; None for any other path."""
    parts = path.split("/")
    if len(parts) == 4 and parts[0] == "" and parts[1] == "endpoints" and parts[3] == "invocations" and parts[2]:
        return unquote(parts[2])
    return None


def _runtime_error(status: int, code: str, message: str, note: str = "", **members: Any) -> _Answer:
    """An error of the SageMaker runtime service, as botocore's REST-JSON parser reads one: the code in
    ``x-amzn-ErrorType``, the message and the error's own members in the body."""
    return _Answer(status, {"message": message, **members}, {"x-amzn-ErrorType": code + ERROR_TYPE_SUFFIX},
                   note=f"{code}{': ' + note if note else ''}")


def _not_found(path: str) -> _Answer:
    return _Answer(404, {"error": f"no such path: {urlsplit(path).path}", "code": 404, "error_type": "not_found"})


def _summary(generation: Generation) -> str:
    return (f"prompt={generation.prompt_tokens} new={generation.generated_tokens} "
            f"finish={generation.finish_reason} first_token={generation.first_token_seconds * 1000:.0f}ms")
