"""Calls to the large model's SageMaker real-time endpoint, and what each way they fail means to a client.

**Clients.** One ``sagemaker-runtime`` client (InvokeEndpoint) and one ``sagemaker`` client (DescribeEndpoint, the
control plane) per container, made at first use (:func:`runtime_client`, :func:`control_client`) and reused; a
caller may hand in its own (tests do). No ``endpoint_url`` is passed: boto3 reads ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``
before ``AWS_ENDPOINT_URL`` by itself, which is how the local stack sends InvokeEndpoint to Ferry's endpoint server
and DescribeEndpoint to moto (:func:`ferry.runtime.aws.client` passes the global variable explicitly, which would
send both to moto).

**Retries: only throttling.** botocore retries 5xx answers, connection errors and read timeouts by default. An
InvokeEndpoint is a POST that may have run on the GPU: retrying a timeout doubles the cost and cannot finish
within API Gateway's 30 s anyway, and a model error comes back the same the second time. So botocore makes exactly
one attempt (``total_max_attempts=1``) and :meth:`EndpointClient.invoke` retries by itself, by error code, only
what throttling answers (:data:`THROTTLING_CODES`, a 429, or a container's own 429 behind ModelError): capped
exponential backoff with full jitter, at most 3 tries and 2 s of waiting, and never a try that could not finish
before the invocation's deadline. botocore's standard mode has no switch for "throttling only" (its transient-error
checker would retry the timeouts too) and a custom retry handler is private API; a loop of ten lines is not.

**Faults** are decided by the error's code (never its message): see :meth:`EndpointClient.fault`. SageMaker answers
the generic ``ValidationError`` for an endpoint that does not exist or is not InService; which of the two (or
neither) is read from DescribeEndpoint (:class:`EndpointStatus`, cached 30 s), not from the message text.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ferry.runtime.capture import Backoff, error_code
from ferry.runtime.constants import ENV_GENERATE_ENDPOINT
from ferry.runtime.exceptions import (
    EndpointError,
    EndpointThrottledError,
    EndpointTimeoutError,
    EndpointUnavailableError,
    FerryRuntimeError,
    ModelFailedError,
    ModelRejectedError,
    PayloadTooLargeError,
)
from ferry.runtime.telemetry import Log

JSON = "application/json"
CONNECT_TIMEOUT_S = 2
# Error codes that mean "not now": botocore's throttling codes that SageMaker can answer, and SageMaker Runtime's
# ModelNotReadyException (429: a serverless variant or a multi-model endpoint still loading).
THROTTLING_CODES = frozenset({"ThrottlingException", "Throttling", "ThrottledException", "TooManyRequestsException",
                              "RequestLimitExceeded", "ModelNotReadyException"})
THROTTLE_BACKOFF = Backoff(attempts=3, base_s=0.2, cap_s=1.0, budget_s=2.0, usage_grace_s=0.0)
RETRY_AFTER_THROTTLED_S = 1
RETRY_AFTER_NOT_READY_S = 10  # a model still loading
RETRY_AFTER_TRANSITION_S = 60  # an endpoint Creating or Updating takes minutes
MAX_MODEL_MESSAGE_CHARS = 1000  # what of a container's own message an error answer quotes

NOT_FOUND = "NotFound"  # EndpointStatus: DescribeEndpoint says there is no such endpoint
UNKNOWN = "Unknown"  # EndpointStatus: the status could not be read (the reason follows in parentheses)
IN_SERVICE = "InService"
TRANSITIONS = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack", "UpdateRollbackFailed"})
STATUS_TTL_S = 30.0
UNKNOWN_TTL_S = 5.0  # a failed DescribeEndpoint is asked again sooner than a status read

log = logging.getLogger(__name__)


# -- the clients ---------------------------------------------------------------------------------------------------

def runtime_config(read_timeout_s: float) -> Any:
    """InvokeEndpoint's client configuration: the timeouts, and one attempt (the module's docstring says why)."""
    from botocore.config import Config

    return Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=read_timeout_s, tcp_keepalive=True,
                  retries={"mode": "standard", "total_max_attempts": 1})


def control_config() -> Any:
    """DescribeEndpoint's: short timeouts (a listing waits on it), botocore's standard retries (a read)."""
    from botocore.config import Config

    return Config(connect_timeout=1, read_timeout=3, retries={"mode": "standard", "total_max_attempts": 2})


def runtime_client(read_timeout_s: float) -> Any:
    """The container's ``sagemaker-runtime`` client with `read_timeout_s`, made once (per region and endpoints)."""
    return _client("sagemaker-runtime", float(read_timeout_s), *_environment())


def control_client() -> Any:
    """The container's ``sagemaker`` client (DescribeEndpoint), made once (per region and endpoints)."""
    return _client("sagemaker", None, *_environment())


def _environment() -> tuple[str | None, ...]:
    # the variables boto3 reads itself: a new value (another local stack in the same process) gets a new client
    return tuple(os.environ.get(name) for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL",
                                                   "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", "AWS_ENDPOINT_URL_SAGEMAKER"))


@functools.cache
def _client(service: str, read_timeout_s: float | None, *_: str | None) -> Any:
    import boto3

    config = control_config() if read_timeout_s is None else runtime_config(read_timeout_s)
    return boto3.client(service, config=config)


# -- the endpoint's status -----------------------------------------------------------------------------------------

class EndpointStatus:
    """The endpoint's status from DescribeEndpoint, cached `ttl_s` seconds: ``InService``, ``Creating``... as
    SageMaker says it, :data:`NOT_FOUND` when there is no such endpoint, or ``Unknown (<error code>)`` when it
    cannot be read. Never raises: a listing shows it, and a fault is decided from it.

    `client` is a ``sagemaker`` client, or a function that makes one (called at first use: a function that never
    asks pays nothing at its cold start)."""

    def __init__(self, name: str, client: Any | Callable[[], Any] = control_client, *, ttl_s: float = STATUS_TTL_S,
                 clock: Callable[[], float] = time.monotonic, logger: Log | None = None):
        self.name, self.ttl_s, self.clock = name, ttl_s, clock
        self._client = client
        self.logger: Log = logger or log
        self._lock = threading.Lock()
        self._value: str | None = None
        self._read_at = 0.0

    @property
    def client(self) -> Any:
        if callable(self._client) and not hasattr(self._client, "describe_endpoint"):
            self._client = self._client()
        return self._client

    def current(self, max_age_s: float | None = None) -> str:
        """The status, read again when the cached one is older than `ttl_s` (or `max_age_s`, when smaller)."""
        with self._lock:
            age = self.clock() - self._read_at
            limit = self.ttl_s if max_age_s is None else min(self.ttl_s, max_age_s)
            if self._value is not None and age < (limit if not self._value.startswith(UNKNOWN) else
                                                  min(limit, UNKNOWN_TTL_S)):
                return self._value
            self._value, self._read_at = self._describe(), self.clock()
            return self._value

    def _describe(self) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return str(self.client.describe_endpoint(EndpointName=self.name)["EndpointStatus"])
        except ClientError as exc:
            code = error_code(exc)
            if code in {"ValidationException", "ValidationError", "ResourceNotFound"}:
                # the one validation a well-formed name can fail: no endpoint has it (decided by code, not text)
                return NOT_FOUND
            self.logger.error("DescribeEndpoint failed", extra={"endpoint": self.name, "code": code,
                                                                "reason": str(exc)})
            return f"{UNKNOWN} ({code})"
        except (BotoCoreError, KeyError, TypeError) as exc:
            self.logger.error("DescribeEndpoint failed", extra={"endpoint": self.name, "reason": repr(exc)})
            return f"{UNKNOWN} ({type(exc).__name__})"


# -- the calls -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Invocation:
    """An endpoint's answer: its JSON, how long the call that answered took, and the throttled tries before it."""

    body: Any
    latency_ms: float
    retries: int = 0


class EndpointClient:
    """InvokeEndpoint on one endpoint, with the faults mapped to the API's errors.

    `runtime` is a ``sagemaker-runtime`` client, or None for the container's (:func:`runtime_client` with
    `timeout_s`, made at first use); `status` the endpoint's :class:`EndpointStatus` (default: one on the
    container's control-plane client). Sleep, clock and random source are passed in so tests run without waiting.
    """

    def __init__(self, name: str, *, timeout_s: float, runtime: Any | None = None, status: EndpointStatus | None = None,
                 backoff: Backoff = THROTTLE_BACKOFF, logger: Log | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None):
        if not name:
            raise EndpointUnavailableError(f"no endpoint is configured: set {ENV_GENERATE_ENDPOINT}")
        self.name, self.timeout_s, self.backoff = name, timeout_s, backoff
        self.logger: Log = logger or log
        self.status = status or EndpointStatus(name, logger=self.logger)
        self.sleep, self.clock, self.rng = sleep, clock, rng or random.Random()
        self._runtime = runtime

    @property
    def runtime(self) -> Any:
        if self._runtime is None:
            self._runtime = runtime_client(self.timeout_s)
        return self._runtime

    def invoke(self, body: Mapping[str, Any], *, deadline: float | None = None) -> Invocation:
        """POST `body` (JSON) to the endpoint and return its JSON answer; a fault is raised as the API's error
        (:meth:`fault`). A throttled call is tried again while the backoff allows and a new try could still end
        before `deadline` (a :func:`time.monotonic` time: the invocation's end; None: no deadline)."""
        from botocore.exceptions import BotoCoreError, ClientError

        payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
        retries, waited = 0, 0.0
        while True:
            started = self.clock()
            try:
                answer = self.runtime.invoke_endpoint(EndpointName=self.name, Body=payload, ContentType=JSON,
                                                      Accept=JSON)
                raw = answer["Body"].read()  # a read timeout can strike here too
            except ClientError as exc:
                pause = self._pause(exc, retries, waited, deadline)
                if pause is None:
                    raise self.fault(exc) from None
                self.sleep(pause)
                retries, waited = retries + 1, waited + pause
                continue
            except BotoCoreError as exc:
                raise self.fault(exc) from None
            latency_ms = (self.clock() - started) * 1000
            return Invocation(self._decode(raw), latency_ms, retries)

    def _pause(self, exc: BaseException, retries: int, waited: float, deadline: float | None) -> float | None:
        """How long to wait before trying a failed call again; None when it is not tried again: not throttled, out
        of tries or of the backoff's budget, or a new try (the pause, then up to the read timeout) could not end
        before `deadline`."""
        if not self.throttled(exc) or retries + 1 >= self.backoff.attempts:
            return None
        pause = self.backoff.delay(retries, self.rng)
        if waited + pause > self.backoff.budget_s:
            return None
        if deadline is not None and self.clock() + pause + self.timeout_s >= deadline:
            return None
        return pause

    @staticmethod
    def throttled(exc: BaseException) -> bool:
        """Whether a ClientError says "not now": a throttling code, HTTP 429, or the container's own 429."""
        code = error_code(exc)
        response: Mapping[str, Any] = getattr(exc, "response", None) or {}
        if code == "ModelError":
            return _int(response.get("OriginalStatusCode")) == 429
        status = _int(response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
        return code in THROTTLING_CODES or status == 429

    def fault(self, exc: BaseException) -> FerryRuntimeError:
        """The API's error for a failed call, by the error's code or class:

        ======================================  =========================================================
        throttling (:data:`THROTTLING_CODES`)   429 ``throttled``, Retry-After
        ModelError, container 4xx (not 429)     400 ``rejected_by_model`` (413 for a 413), its message
        ModelError, container 429               429 ``throttled``
        ModelError, container 5xx               502 ``model_error``, the container's message
        ValidationError                         503 ``endpoint_unavailable`` when DescribeEndpoint says the
                                                endpoint is missing or not InService; else 502
        ServiceUnavailable                      503 ``endpoint_unavailable``, Retry-After
        read / connect timeout                  504 ``model_timeout``
        EndpointConnectionError                 503 ``endpoint_unavailable``
        anything else                           502 ``upstream_error``, a generic message (details logged)
        ======================================  =========================================================
        """
        from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

        if isinstance(exc, ClientError):
            return self._service_fault(exc)
        if isinstance(exc, ReadTimeoutError):
            return EndpointTimeoutError(f"the model did not answer within {self.timeout_s:g} s: ask for fewer new "
                                        "tokens (max_new_tokens, max_tokens) or try again")
        if isinstance(exc, ConnectTimeoutError):
            return EndpointTimeoutError(f"the endpoint did not accept a connection within {CONNECT_TIMEOUT_S} s; "
                                        "try again")
        if isinstance(exc, EndpointConnectionError):
            self.logger.error("cannot connect to the endpoint", extra={"endpoint": self.name, "reason": str(exc)})
            return EndpointUnavailableError(f"the endpoint {self.name!r} cannot be reached; try again later",
                                            retry_after=RETRY_AFTER_THROTTLED_S)
        return self._generic(type(exc).__name__, exc)

    def _service_fault(self, exc: Any) -> FerryRuntimeError:
        code = error_code(exc)
        if code == "ModelError":
            return self._model_fault(exc.response)
        if self.throttled(exc):
            wait = RETRY_AFTER_NOT_READY_S if code == "ModelNotReadyException" else RETRY_AFTER_THROTTLED_S
            return EndpointThrottledError(f"the model's endpoint is busy ({code}); try again in {wait} s",
                                          retry_after=wait)
        if code == "ValidationError":
            return self._refused(exc)
        if code == "ServiceUnavailable":
            return EndpointUnavailableError("SageMaker could not take the call (ServiceUnavailable); try again",
                                            retry_after=RETRY_AFTER_THROTTLED_S)
        return self._generic(code, exc)

    def _model_fault(self, response: Mapping[str, Any]) -> FerryRuntimeError:
        """ModelError (SageMaker's 424): the container answered an error of its own, `OriginalStatusCode` with
        `OriginalMessage`. A 4xx is the request's fault as the model sees it (a prompt longer than its context):
        a 400 with its message, since the client can change the request. A 5xx is the model failing: 502."""
        original = _int(response.get("OriginalStatusCode"))
        message = model_message(response.get("OriginalMessage"))
        if original == 429:
            return EndpointThrottledError(f"the model is busy: {message}", retry_after=RETRY_AFTER_THROTTLED_S)
        if original == 413:
            return PayloadTooLargeError(f"the model refused the request as too large: {message}")
        if original is not None and 400 <= original < 500:
            return ModelRejectedError(f"the model refused the request: {message}")
        self.logger.error("the model failed", extra={"endpoint": self.name, "original_status": original,
                                                     "log_stream": response.get("LogStreamArn"),
                                                     "original_message": response.get("OriginalMessage")})
        return ModelFailedError(f"the model failed ({original if original is not None else 'no status'}): {message}")

    def _refused(self, exc: Any) -> FerryRuntimeError:
        """SageMaker's generic ValidationError: the endpoint is missing or not InService (DescribeEndpoint, read
        again when the cached status is over 5 s old), or else it refused the call itself (our fault: 502)."""
        status = self.status.current(max_age_s=5.0)
        if status == NOT_FOUND:
            return EndpointUnavailableError(
                f"the endpoint {self.name!r} does not exist: deploy the stack with its large model, or set "
                f"{ENV_GENERATE_ENDPOINT} to an endpoint that exists")
        if status in TRANSITIONS:
            return EndpointUnavailableError(f"the endpoint {self.name!r} is {status}: it answers once it is "
                                            "InService; try again later", retry_after=RETRY_AFTER_TRANSITION_S)
        if status.startswith(UNKNOWN):
            return EndpointUnavailableError(f"the endpoint {self.name!r} refused the call and its status cannot be "
                                            f"read ({status})")
        if status != IN_SERVICE:
            return EndpointUnavailableError(f"the endpoint {self.name!r} is {status}: it cannot answer")
        return self._generic("ValidationError", exc)

    def _generic(self, code: str, exc: BaseException) -> FerryRuntimeError:
        self.logger.error("the endpoint call failed", extra={"endpoint": self.name, "code": code,
                                                             "reason": str(exc)})
        return EndpointError(f"the call to the model's endpoint failed ({code}); the details are in the logs")

    def _decode(self, raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except ValueError:
            self.logger.error("the endpoint answered something that is not JSON",
                              extra={"endpoint": self.name, "answer": raw[:200].decode("utf-8", "replace")})
            raise EndpointError("the model's endpoint answered something that is not JSON; the details are in "
                                "the logs") from None


def model_message(original: Any) -> str:
    """A container's own error message, from SageMaker's OriginalMessage: the ``error`` (a string, or an object's
    ``message``) or ``message`` of a JSON body (TGI, LMI and Ferry's endpoint server answer ``{"error": ...}``),
    else the text itself; shortened to MAX_MODEL_MESSAGE_CHARS."""
    text = original if isinstance(original, str) else ""
    try:
        document = json.loads(text) if text.lstrip().startswith("{") else None
    except ValueError:
        document = None
    if isinstance(document, dict):
        error = document.get("error")
        if isinstance(error, dict):
            error = error.get("message")
        found = next((value for value in (error, document.get("message"), document.get("Message"))
                      if isinstance(value, str) and value.strip()), None)
        text = found if found is not None else text
    text = text.strip() or "the model gave no message"
    return text if len(text) <= MAX_MODEL_MESSAGE_CHARS else text[:MAX_MODEL_MESSAGE_CHARS] + "..."


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None
