"""The endpoint's calls and faults (ferry.runtime.endpoint_client): each SageMaker Runtime fault mapped by its code
(botocore's Stubber, and the fake endpoint through a real client in process: botocore parses SageMaker's error
shapes itself), only throttling retried and botocore retrying nothing, the endpoint's status read once per 30 s.

The same faults over real HTTP, a read timeout and a refused connection included: tests/integration/
test_generation_http.py."""

from __future__ import annotations

import random
import re
from typing import Any

import boto3
import pytest
from botocore.exceptions import ConnectTimeoutError
from botocore.stub import Stubber

from ferry.runtime import endpoint_client
from ferry.runtime.endpoint_client import (
    NOT_FOUND,
    EndpointClient,
    EndpointStatus,
    model_message,
    runtime_config,
)
from ferry.runtime.exceptions import (
    EndpointError,
    EndpointThrottledError,
    EndpointTimeoutError,
    EndpointUnavailableError,
    ModelFailedError,
    ModelRejectedError,
    PayloadTooLargeError,
)

from fake_endpoint import (
    BODY,
    ENDPOINT,
    REGION,
    FakeEndpoint,
    attach,
    model_error,
    not_ready,
    service_error,
    slow,
    throttled,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FixedStatus:
    """An EndpointStatus that answers `value` and counts the reads."""

    def __init__(self, value: str) -> None:
        self.value, self.reads = value, 0

    def current(self, max_age_s: float | None = None) -> str:
        self.reads += 1
        return self.value


def runtime(timeout_s: float = 1) -> Any:
    """A sagemaker-runtime client as the function makes one (its Config), on a host no test resolves."""
    return boto3.client("sagemaker-runtime", endpoint_url="http://endpoint.invalid", config=runtime_config(timeout_s),
                        **REGION)


def client_over(fake: FakeEndpoint, *, status: str = "InService", timeout_s: float = 1) -> tuple[EndpointClient,
                                                                                                   list[str],
                                                                                                   list[float]]:
    """An EndpointClient on the fake endpoint in process: (client, URLs sent, pauses slept)."""
    real = runtime(timeout_s)
    sent, slept = attach(real, fake), []
    client = EndpointClient(fake.name if fake.name else ENDPOINT, timeout_s=timeout_s, runtime=real,
                            status=FixedStatus(status), sleep=slept.append, rng=random.Random(1))  # type: ignore[arg-type]
    return client, sent, slept


# -- the fault table, by code (Stubber) --------------------------------------------------------------------------------

FAULTS = [
    # (code, HTTP status, modeled fields) -> (error, status, code, in the message, Retry-After)
    (("ThrottlingException", 400, None), (EndpointThrottledError, 429, "throttled", "busy (ThrottlingException)", "1")),
    (("ModelNotReadyException", 429, None), (EndpointThrottledError, 429, "throttled", "ModelNotReadyException", "10")),
    (("ModelError", 424, {"OriginalStatusCode": 400,
                          "OriginalMessage": '{"error": "Input is 9000 tokens, over the context of 8192", '
                                             '"error_type": "validation"}'}),
     (ModelRejectedError, 400, "rejected_by_model", "the model refused the request: Input is 9000 tokens", None)),
    (("ModelError", 424, {"OriginalStatusCode": 422, "OriginalMessage": "temperature must be positive"}),
     (ModelRejectedError, 400, "rejected_by_model", ": temperature must be positive", None)),
    (("ModelError", 424, {"OriginalStatusCode": 413, "OriginalMessage": '{"message": "body too large"}'}),
     (PayloadTooLargeError, 413, "payload_too_large", "too large: body too large", None)),
    (("ModelError", 424, {"OriginalStatusCode": 429, "OriginalMessage": '{"error": "Model is overloaded", '
                                                                       '"error_type": "overloaded"}'}),
     (EndpointThrottledError, 429, "throttled", "the model is busy: Model is overloaded", "1")),
    (("ModelError", 424, {"OriginalStatusCode": 500, "OriginalMessage": '{"error": {"message": "CUDA out of memory",'
                                                                       ' "type": "oom"}}'}),
     (ModelFailedError, 502, "model_error", "the model failed (500): CUDA out of memory", None)),
    (("ModelError", 424, {}), (ModelFailedError, 502, "model_error", "(no status): the model gave no message", None)),
    (("ServiceUnavailable", 503, None), (EndpointUnavailableError, 503, "endpoint_unavailable", "ServiceUnavailable",
                                         "1")),
    (("InternalFailure", 500, None), (EndpointError, 502, "upstream_error", "failed (InternalFailure); the details",
                                      None)),
    (("InternalDependencyException", 530, None), (EndpointError, 502, "upstream_error", "InternalDependencyException",
                                                  None)),
    (("AccessDeniedException", 400, None), (EndpointError, 502, "upstream_error", "(AccessDeniedException)", None)),
]


@pytest.mark.parametrize(("fault", "expected"), FAULTS, ids=[f"{fault[0]}-{(fault[2] or {}).get('OriginalStatusCode')}"
                                                            for fault, _ in FAULTS])
def test_each_fault_is_mapped_by_its_code(fault, expected):
    code, status, modeled = fault
    kind, http_status, api_code, message, retry_after = expected
    real = runtime()
    client = EndpointClient(ENDPOINT, timeout_s=1, runtime=real, status=FixedStatus("InService"),  # type: ignore[arg-type]
                            sleep=lambda _: None, backoff=endpoint_client.Backoff(attempts=1))
    with Stubber(real) as stubber:
        stubber.add_client_error("invoke_endpoint", service_error_code=code, service_message="a message we never quote",
                                 http_status_code=status, modeled_fields=modeled)
        with pytest.raises(kind) as raised:
            client.invoke(BODY)
        stubber.assert_no_pending_responses()
    error = raised.value
    assert (error.status, error.code) == (http_status, api_code)
    assert message in str(error) and "a message we never quote" not in str(error)
    assert "ClientError" not in str(error) and "botocore" not in str(error)  # never an exception's repr
    assert error.headers.get("Retry-After") == retry_after


@pytest.mark.parametrize(("status", "expected", "message", "retry_after"), [
    (NOT_FOUND, EndpointUnavailableError, "'ferry-llm' does not exist", None),
    ("Creating", EndpointUnavailableError, "'ferry-llm' is Creating: it answers once it is InService", "60"),
    ("Updating", EndpointUnavailableError, "is Updating", "60"),
    ("Failed", EndpointUnavailableError, "'ferry-llm' is Failed: it cannot answer", None),
    ("Unknown (AccessDeniedException)", EndpointUnavailableError, "cannot be read (Unknown (AccessDeniedException))",
     None),
    ("InService", EndpointError, "failed (ValidationError); the details are in the logs", None),
])
def test_sagemaker_s_generic_validation_error_is_decided_by_the_endpoint_s_status(status, expected, message,
                                                                                   retry_after):
    real, described = runtime(), FixedStatus(status)
    client = EndpointClient(ENDPOINT, timeout_s=1, runtime=real, status=described)  # type: ignore[arg-type]
    with Stubber(real) as stubber:  # the same code and text for a missing endpoint and for a bad call
        stubber.add_client_error("invoke_endpoint", "ValidationError", "Endpoint ferry-llm of account 1 not found.")
        with pytest.raises(expected, match=re.escape(message)) as raised:
            client.invoke(BODY)
    assert raised.value.headers.get("Retry-After") == retry_after
    assert described.reads == 1


@pytest.mark.parametrize(("original", "message"), [
    ('{"error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 2048", "error_type": '
     '"validation"}', "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 2048"),  # TGI, LMI
    ('{"error": {"message": "too long", "code": 400}}', "too long"),  # OpenAI-shaped
    ('{"message": "no handler"}', "no handler"),
    ('{"Message": "Ouch"}', "Ouch"),
    ('{"detail": "x"}', '{"detail": "x"}'),  # JSON without a message: the text itself
    ("upstream connect error", "upstream connect error"),
    ("{not json", "{not json"),
    ("", "the model gave no message"),
    (None, "the model gave no message"),
    ("x" * 1500, "x" * 1000 + "..."),
])
def test_the_model_s_own_message_is_read_from_its_answer(original, message):
    assert model_message(original) == message


# -- retries: throttling only, botocore none (a real client, the fake endpoint in process) -------------------------

def test_a_throttled_call_is_tried_again_with_jittered_backoff_and_then_answers():
    fake = FakeEndpoint(faults=[throttled(), not_ready()])
    client, sent, slept = client_over(fake)
    invocation = client.invoke(BODY)
    assert invocation.body["generated_text"] == "Paris is the capital"
    assert (invocation.retries, len(sent), len(slept)) == (2, 3, 2)
    assert 0 <= slept[0] < 0.2 and 0 <= slept[1] < 0.4  # full jitter under base * 2**retry


def test_throttling_that_lasts_is_a_429_after_three_tries():
    fake = FakeEndpoint(faults=[throttled()] * 5)
    client, sent, slept = client_over(fake)
    with pytest.raises(EndpointThrottledError) as raised:
        client.invoke(BODY)
    assert (len(sent), len(slept), raised.value.headers) == (3, 2, {"Retry-After": "1"})


def test_no_throttled_retry_starts_that_could_not_end_before_the_deadline():
    fake = FakeEndpoint(faults=[throttled()] * 3)
    client, sent, _ = client_over(fake, timeout_s=1)
    import time

    with pytest.raises(EndpointThrottledError):
        client.invoke(BODY, deadline=time.monotonic() + 0.9)  # a retry could take the 1 s read timeout: none
    assert len(sent) == 1


@pytest.mark.parametrize(("fault", "expected"), [
    (service_error("InternalFailure", 500), EndpointError),
    (service_error("ServiceUnavailable", 503), EndpointUnavailableError),
    (model_error(503, {"error": "worker died"}), ModelFailedError),
    (model_error(400, {"error": "bad"}), ModelRejectedError),
    (slow(5), EndpointTimeoutError),  # over the client's 1 s read timeout
], ids=["InternalFailure-500", "ServiceUnavailable-503", "ModelError-503", "ModelError-400", "read-timeout"])
def test_botocore_retries_nothing_and_neither_does_the_client_but_for_throttling(fault, expected):
    fake = FakeEndpoint(faults=[fault, fault, fault])
    client, sent, slept = client_over(fake)
    with pytest.raises(expected):
        client.invoke(BODY)
    assert (len(sent), slept) == (1, [])  # botocore's default would have made 3 (legacy 5) attempts


def test_timeouts_and_a_refused_connection():
    fake = FakeEndpoint(faults=[slow(5)])
    client, sent, _ = client_over(fake)
    with pytest.raises(EndpointTimeoutError, match="did not answer within 1 s: ask for fewer new tokens") as raised:
        client.invoke(BODY)
    assert (raised.value.status, raised.value.code) == (504, "model_timeout")
    fake.refused = True
    with pytest.raises(EndpointUnavailableError, match="'ferry-llm' cannot be reached") as refused:
        client.invoke(BODY)
    assert (refused.value.status, refused.value.headers) == (503, {"Retry-After": "1"})
    connect = client.fault(ConnectTimeoutError(endpoint_url="http://endpoint.invalid"))
    assert (connect.status, str(connect)) == (504, "the endpoint did not accept a connection within 2 s; try again")
    assert len(sent) == 2


def test_an_answer_that_is_not_json_is_the_endpoint_s_fault():
    real = runtime()
    client = EndpointClient(ENDPOINT, timeout_s=1, runtime=real, status=FixedStatus("InService"))  # type: ignore[arg-type]
    from io import BytesIO

    from botocore.response import StreamingBody

    with Stubber(real) as stubber:
        stubber.add_response("invoke_endpoint", {"Body": StreamingBody(BytesIO(b"<html>"), 6),
                                                 "ContentType": "text/html"})
        with pytest.raises(EndpointError, match="not JSON"):
            client.invoke(BODY)


def test_the_call_sends_json_to_the_endpoint_by_name():
    real = runtime()
    client = EndpointClient(ENDPOINT, timeout_s=1, runtime=real, status=FixedStatus("InService"))  # type: ignore[arg-type]
    from io import BytesIO

    from botocore.response import StreamingBody

    with Stubber(real) as stubber:
        stubber.add_response("invoke_endpoint", {"Body": StreamingBody(BytesIO(b'{"generated_text": "ok"}'), 24)},
                             expected_params={"EndpointName": ENDPOINT, "ContentType": "application/json",
                                              "Accept": "application/json",
                                              "Body": '{"inputs": "Où ?"}'.encode()})
        assert client.invoke({"inputs": "Où ?"}).body == {"generated_text": "ok"}
    with pytest.raises(EndpointUnavailableError, match="FERRY_GENERATE_ENDPOINT"):
        EndpointClient("", timeout_s=1)


# -- the endpoint's status ---------------------------------------------------------------------------------------------

def control() -> Any:
    return boto3.client("sagemaker", **REGION)


def test_the_status_is_read_once_per_30_seconds_and_sooner_when_it_could_not_be_read():
    real, clock = control(), Clock()
    status = EndpointStatus(ENDPOINT, client=real, clock=clock)
    with Stubber(real) as stubber:
        stubber.add_response("describe_endpoint", describe("Creating"), {"EndpointName": ENDPOINT})
        stubber.add_response("describe_endpoint", describe("InService"), {"EndpointName": ENDPOINT})
        stubber.add_client_error("describe_endpoint", "AccessDeniedException", "no", 400)
        stubber.add_client_error("describe_endpoint", "ValidationException", "Could not find endpoint", 400)
        assert status.current() == "Creating"
        clock.now += 29
        assert status.current() == "Creating"  # cached
        assert status.current(max_age_s=5) == "InService"  # a fault asks for a fresher one
        clock.now += 30
        assert status.current() == "Unknown (AccessDeniedException)"  # a listing never fails for it
        clock.now += 4
        assert status.current() == "Unknown (AccessDeniedException)"
        clock.now += 2  # an unreadable status is asked again after 5 s
        assert status.current() == NOT_FOUND  # DescribeEndpoint's ValidationException: no such endpoint
        stubber.assert_no_pending_responses()


def test_the_clients_are_made_once_at_first_use_with_the_right_endpoints(monkeypatch):
    for name, value in {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
                        "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
                        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": "http://127.0.0.1:7000"}.items():
        monkeypatch.setenv(name, value)
    endpoint_client._client.cache_clear()
    try:
        first = endpoint_client.runtime_client(25)
        assert first is endpoint_client.runtime_client(25)  # once per container
        assert first.meta.endpoint_url == "http://127.0.0.1:7000"  # the local endpoint server, not moto
        config = first.meta.config
        assert (config.connect_timeout, config.read_timeout, config.retries) == (
            2, 25, {"mode": "standard", "total_max_attempts": 1})
        plane = endpoint_client.control_client()
        assert plane.meta.endpoint_url == "http://127.0.0.1:5000" and plane is endpoint_client.control_client()
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", "http://127.0.0.1:7001")
        assert endpoint_client.runtime_client(25).meta.endpoint_url == "http://127.0.0.1:7001"
        lazy = EndpointClient(ENDPOINT, timeout_s=25)
        assert lazy._runtime is None and lazy.status._client is endpoint_client.control_client  # nothing made yet
    finally:
        endpoint_client._client.cache_clear()


def describe(status: str) -> dict[str, Any]:
    from datetime import UTC, datetime

    now = datetime(2026, 11, 29, tzinfo=UTC)
    return {"EndpointName": ENDPOINT, "EndpointArn": f"arn:aws:sagemaker:us-east-1:1:endpoint/{ENDPOINT}",
            "EndpointConfigName": "c", "EndpointStatus": status, "CreationTime": now, "LastModifiedTime": now}
