"""The endpoint server over real HTTP on 127.0.0.1, with a tiny causal LM trained to answer a few questions
exactly (tests/tiny_models.py): the engine's generation rules, the container's contract in both dialects, the
SageMaker runtime's contract through a real boto3 client, huggingface_hub's InferenceClient unchanged, and
`ferry serve-endpoint` as a user runs it. Faults come from the tests' own engines, never from a switch in the server.
One test (slow) runs the real SmolLM2."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ferry.endpoint.engine import Engine, Generation, Sampling
from ferry.endpoint.exceptions import (
    ListenError,
    ModelLoadError,
    NoChatTemplateError,
    PromptTooLongError,
)
from ferry.endpoint.server import GENERIC_ERROR, serve

from helpers import ROOT, offline_env
from tiny_models import TINY_CHATS, TINY_CONTEXT, smollm2_folder, tiny_causal_lm

NAME = "tiny-lm"


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    return tiny_causal_lm(tmp_path_factory.mktemp("endpoint") / NAME)


@pytest.fixture(scope="module")
def engine(tiny_lm) -> Engine:
    import torch

    threads = torch.get_num_threads()
    yield Engine.load(tiny_lm, threads=1)  # a tiny model: one thread is fastest, and much faster on a busy machine
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def server(engine):
    running = serve(engine, port=0)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def runtime(server):
    return sagemaker_runtime(server.url)


def sagemaker_runtime(url: str, **retries):
    import boto3
    from botocore.config import Config

    return boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing",
                        config=Config(retries=retries or {"mode": "standard", "total_max_attempts": 1}))


def ask(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


def request(url: str, method: str = "POST", body=None, raw: bytes | None = None, content_type="application/json",
            headers=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    sent = {**({"Content-Type": content_type} if data is not None and content_type else {}), **(headers or {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method, headers=sent),
                                    timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


# -- the engine ------------------------------------------------------------------------------------------------------

def test_greedy_chat_answers_what_it_learned_and_ends_on_eos(engine):
    for question, answer in TINY_CHATS.items():
        generation = engine.chat(ask(question), Sampling(max_new_tokens=64))
        assert generation.text == answer
        assert generation.finish_reason == "eos_token"
        assert generation.generated_tokens == len(answer.encode()) + 1  # a byte a token, and <|im_end|>
        assert 0 < generation.first_token_seconds <= generation.seconds


def test_the_engine_reports_what_it_loaded(engine, tiny_lm):
    assert engine.model_dir == tiny_lm
    assert (engine.context_length, engine.dtype, engine.device) == (TINY_CONTEXT, "float32", "cpu")
    assert engine.load_seconds > 0


def test_greedy_is_deterministic(engine):
    runs = {engine.generate("count to", Sampling(max_new_tokens=20)).text for _ in range(3)}
    assert len(runs) == 1


def test_max_new_tokens_is_respected(engine):
    generation = engine.chat(ask("count to five"), Sampling(max_new_tokens=7))
    assert (generation.text, generation.generated_tokens, generation.finish_reason) == ("one two", 7, "length")


def test_a_stop_sequence_ends_generation_and_is_cut(engine):
    generation = engine.chat(ask("count to five"), Sampling(stop_sequences=("three",)))
    assert (generation.text, generation.finish_reason) == ("one two ", "stop_sequence")
    # it stopped when "three" was complete, not at the end of the answer
    assert generation.generated_tokens == len("one two three")


def test_the_earliest_stop_sequence_wins(engine):
    generation = engine.chat(ask("count to five"), Sampling(stop_sequences=("four", "two")))
    assert (generation.text, generation.finish_reason) == ("one ", "stop_sequence")


def test_a_stop_sequence_never_seen_changes_nothing(engine):
    generation = engine.chat(ask("hello"), Sampling(stop_sequences=("zebra",)))
    assert (generation.text, generation.finish_reason) == (TINY_CHATS["hello"], "eos_token")


def test_a_seed_makes_sampling_reproducible(engine):
    def sample(seed: int) -> str:
        return engine.generate("hello", Sampling(max_new_tokens=24, do_sample=True, temperature=3.0, seed=seed)).text

    assert sample(7) == sample(7)
    assert len({sample(seed) for seed in range(4)}) > 1


def test_a_prompt_that_does_not_fit_the_context_is_refused(engine):
    with pytest.raises(PromptTooLongError) as raised:
        engine.generate("x" * (TINY_CONTEXT - 10), Sampling(max_new_tokens=11))
    assert raised.value.status == 400
    assert raised.value.field == "inputs"
    assert f"at most {TINY_CONTEXT}" in str(raised.value)
    assert engine.generate("x" * (TINY_CONTEXT - 11), Sampling(max_new_tokens=11)).prompt_tokens == TINY_CONTEXT - 11


def test_a_model_without_a_chat_template_takes_prompts_only(tiny_lm, tmp_path):
    bare = shutil.copytree(tiny_lm, tmp_path / "bare")
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    engine = Engine.load(bare)
    with pytest.raises(NoChatTemplateError):
        engine.chat(ask("hello"), Sampling())
    assert engine.generate("hello", Sampling(max_new_tokens=2)).generated_tokens == 2


def test_a_folder_transformers_cannot_load_is_a_load_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError):
        Engine.load(tmp_path)


def test_the_modules_import_without_torch():
    code = ("import sys, ferry.endpoint.server, ferry.commands.endpoint; "
            "assert not {'torch', 'transformers'} & set(sys.modules), 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=offline_env(), timeout=60)


# -- the container: /ping, /invocations, /v1/chat/completions --------------------------------------------------------

def test_ping_is_healthy_once_loaded(server):
    assert request(server.url + "/ping", "GET")[::2] == (200, {"status": "Healthy"})


def test_invocations_generate_text_in_lmis_shape(server):
    status, headers, body = request(server.url + "/invocations", body={
        "inputs": "count to", "parameters": {"max_new_tokens": 4, "details": True}})
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert set(body) == {"generated_text", "details"}
    assert body["details"] == {"finish_reason": "length", "generated_tokens": 4, "inputs": "count to",
                               "prompt_tokens": len(b"count to")}
    status, _, full = request(server.url + "/invocations", body={
        "inputs": "count to", "parameters": {"max_new_tokens": 4, "return_full_text": True}})
    assert full == {"generated_text": "count to" + body["generated_text"]}


def test_invocations_answer_a_chat_completion(server):
    status, _, body = request(server.url + "/invocations", body={"messages": ask("What is the capital of France?")})
    assert status == 200
    assert body["object"] == "chat.completion" and body["model"] == NAME
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Paris."}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == len("Paris.") + 1


def test_the_openai_path_takes_chat_only(server):
    status, _, body = request(server.url + "/v1/chat/completions",
                              body={"messages": ask("hello"), "max_tokens": 2, "model": "dummy"})
    assert (status, body["choices"][0]["message"]["content"], body["choices"][0]["finish_reason"]) == \
        (200, "Hi", "length")
    status, _, error = request(server.url + "/v1/chat/completions", body={"inputs": "hello"})
    assert status == 400 and error["error"].startswith("messages is required")


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"inputs": "hi", "parameters": {"top_p": 2}}, 400, "parameters.top_p must be over 0 and at most 1"),
    ({"inputs": "hi", "parameters": {"max_new_token": 2}}, 400, "parameters.max_new_token is not a parameter"),
    ({"inputs": "hi", "stream": True}, 400, "streaming is not supported"),
    ({"messages": ask("hi"), "n": 2}, 400, "n must be 1"),
    ({"inputs": "x" * TINY_CONTEXT}, 400, f"at most {TINY_CONTEXT}"),
])
def test_a_bad_request_is_a_400_in_lmis_error_shape(server, body, status, words):
    answer = request(server.url + "/invocations", body=body)
    assert answer[0] == status
    assert set(answer[2]) == {"error", "code", "error_type"} and answer[2]["code"] == status
    assert words in answer[2]["error"]


def test_wire_errors_are_json(server):
    assert request(server.url + "/invocations", raw=b'{"inputs": "x"}', content_type="text/plain")[0] == 415
    assert request(server.url + "/invocations", raw=b'{"inputs": ', content_type="application/json")[2]["error"] \
        .startswith("the body is not valid JSON")
    too_large = request(server.url + "/invocations", raw=b" " * (6 * 1024 * 1024 + 1))
    assert too_large[0] == 413 and too_large[2]["error_type"] == "body_too_large"
    assert request(server.url + "/nowhere", body={})[0] == 404
    assert request(server.url + "/ping", "DELETE")[0] == 405
    assert request(server.url + "/models", "GET")[0] == 404


def test_concurrent_requests_are_all_answered(server):
    questions = list(TINY_CHATS) * 3
    with ThreadPoolExecutor(len(questions)) as pool:
        answers = list(pool.map(lambda question: request(server.url + "/invocations",
                                                         body={"messages": ask(question)}), questions))
    assert [status for status, _, _ in answers] == [200] * len(questions)
    assert [body["choices"][0]["message"]["content"] for _, _, body in answers] == \
        [TINY_CHATS[question] for question in questions]


def test_huggingface_inference_client_works_unchanged(server, monkeypatch):
    from huggingface_hub import InferenceClient, constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # it refuses even 127.0.0.1 offline (STACK.md)
    assert InferenceClient(model=server.url + "/invocations").text_generation(
        "count to", max_new_tokens=3, details=True).details.finish_reason == "length"
    completion = InferenceClient(model=server.url).chat_completion(ask("hello"), max_tokens=16)
    assert completion.choices[0].message.content == TINY_CHATS["hello"]


# -- the SageMaker runtime: boto3's sagemaker-runtime client ---------------------------------------------------------

def test_boto3_invokes_the_endpoint_unchanged(server, runtime):
    answer = runtime.invoke_endpoint(EndpointName=NAME, ContentType="application/json", Accept="application/json",
                                     CustomAttributes="trace=1",
                                     Body=json.dumps({"messages": ask("What is the capital of France?")}))
    assert answer["ContentType"] == "application/json"
    assert answer["InvokedProductionVariant"] == "AllTraffic"
    assert json.loads(answer["Body"].read())["choices"][0]["message"]["content"] == "Paris."
    text = runtime.invoke_endpoint(EndpointName=NAME, Body=json.dumps({"inputs": "hello", "parameters": {
        "max_new_tokens": 2}}))  # no content type: taken as JSON
    assert len(json.loads(text["Body"].read())["generated_text"]) > 0


def test_an_unknown_endpoint_is_a_validation_error(runtime):
    with pytest.raises(runtime.exceptions.ValidationError) as raised:
        runtime.invoke_endpoint(EndpointName="other", Body=b"{}")
    error = raised.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Error"]["Message"] == "Endpoint other of account 123456789012 not found."


def test_a_container_error_is_a_model_error(runtime):
    with pytest.raises(runtime.exceptions.ModelError) as raised:
        runtime.invoke_endpoint(EndpointName=NAME, Body=json.dumps({"inputs": "hi", "parameters": {"top_k": 0}}))
    error = raised.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert error["OriginalStatusCode"] == 400
    original = json.loads(error["OriginalMessage"])
    assert original["code"] == 400 and original["error"].startswith("parameters.top_k must be at least 1")
    assert error["Error"]["Message"].startswith('Received client error (400) from primary with message "{')
    assert error["LogStreamArn"].endswith(f"/aws/sagemaker/Endpoints/{NAME}")


def test_a_body_over_6_mb_is_refused_as_sagemaker_does(runtime):
    with pytest.raises(runtime.exceptions.ClientError) as raised:
        runtime.invoke_endpoint(EndpointName=NAME, Body=b" " * (6 * 1024 * 1024 + 1))
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert raised.value.response["Error"]["Message"] == "HTTP content length exceeded 6291456 bytes."


# -- faults, from the tests' own engines -----------------------------------------------------------------------------

class GatedEngine(Engine):
    """An engine whose generations wait for the test to let them go (or fail), counting those under way."""

    def __init__(self, model_dir: Path, fail: bool = False):
        super().__init__(model_dir=model_dir, load_seconds=0.0, context_length=TINY_CONTEXT, dtype="float32",
                         device="cpu", _model=None, _tokenizer=None, _eos_ids=frozenset())
        self.gate, self.fail, self.inside = threading.Event(), fail, 0

    def generate(self, prompt: str, sampling: Sampling) -> Generation:
        self.inside += 1
        if self.fail:
            raise RuntimeError("a secret detail of the server")
        self.gate.wait(30)
        return Generation("ok", 1, 1, "length", 0.1, 0.1)


def test_a_full_queue_is_a_503_and_sagemaker_throttling(tiny_lm):
    engine = GatedEngine(tiny_lm)
    busy = serve(engine, port=0, max_waiting=1)
    pool = ThreadPoolExecutor(2)
    try:
        held = [pool.submit(request, busy.url + "/invocations", body={"inputs": "x"}) for _ in range(2)]
        deadline = time.monotonic() + 10
        while engine.inside < 2 and time.monotonic() < deadline:  # one generating, one waiting: the queue is full
            time.sleep(0.01)
        status, _, body = request(busy.url + "/invocations", body={"inputs": "x"})
        assert (status, body["error_type"]) == (503, "service_unavailable")
        with pytest.raises(Exception) as raised:
            sagemaker_runtime(busy.url).invoke_endpoint(EndpointName=NAME, Body=b'{"inputs": "x"}')
        error = raised.value.response
        assert (error["ResponseMetadata"]["HTTPStatusCode"], error["Error"]["Code"]) == (400, "ThrottlingException")
        # botocore's standard retry mode classifies it as throttling, and tries again
        with pytest.raises(Exception) as retried:
            sagemaker_runtime(busy.url, mode="standard", total_max_attempts=2).invoke_endpoint(
                EndpointName=NAME, Body=b'{"inputs": "x"}')
        assert retried.value.response["ResponseMetadata"]["RetryAttempts"] == 1
        engine.gate.set()
        assert [future.result()[0] for future in held] == [200, 200]
        assert request(busy.url + "/invocations", body={"inputs": "x"})[0] == 200  # the queue drained
    finally:
        engine.gate.set()
        pool.shutdown()
        busy.stop()


def test_an_unexpected_error_is_a_generic_500_and_a_model_error(tiny_lm, caplog):
    failing = serve(GatedEngine(tiny_lm, fail=True), port=0)
    try:
        status, _, body = request(failing.url + "/invocations", body={"inputs": "x"})
        assert (status, body) == (500, {"error": GENERIC_ERROR, "code": 500, "error_type": "internal_error"})
        runtime = sagemaker_runtime(failing.url)
        with pytest.raises(runtime.exceptions.ModelError) as raised:
            runtime.invoke_endpoint(EndpointName=NAME, Body=b'{"inputs": "x"}')
        assert raised.value.response["OriginalStatusCode"] == 500
        assert "Received server error (500) from primary" in raised.value.response["Error"]["Message"]
        assert "secret" not in json.dumps(raised.value.response, default=str)
    finally:
        failing.stop()
    assert "a secret detail of the server" in caplog.text  # the traceback is in the server's log


def test_a_model_that_fails_to_load_is_never_healthy(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    broken = serve(tmp_path, port=0, endpoint_name="broken")
    try:
        with pytest.raises(ModelLoadError):
            broken.wait_ready(60)
        assert request(broken.url + "/ping", "GET")[::2] == (503, {"status": "Unhealthy"})
        status, _, body = request(broken.url + "/invocations", body={"inputs": "x"})
        assert (status, body["error_type"]) == (503, "model_not_ready")
        runtime = sagemaker_runtime(broken.url)
        with pytest.raises(runtime.exceptions.ModelNotReadyException):
            runtime.invoke_endpoint(EndpointName="broken", Body=b'{"inputs": "x"}')
    finally:
        broken.stop()


def test_a_port_in_use_is_a_listen_error(engine, server):
    port = int(server.url.rsplit(":", 1)[1])
    with pytest.raises(ListenError, match=f"cannot listen on 127.0.0.1:{port}"):
        serve(engine, port=port)


def test_a_server_in_a_with_block_stops_at_its_end(engine):
    with serve(engine, port=0) as scoped:
        assert request(scoped.url + "/ping", "GET")[0] == 200
    with pytest.raises(urllib.error.URLError):
        request(scoped.url + "/ping", "GET")


# -- `ferry serve-endpoint` ------------------------------------------------------------------------------------------

def start_command(*arguments: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "ferry.cli", "serve-endpoint", *arguments], cwd=ROOT,
                               env=offline_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    assert " at http://" in line, line + process.stderr.read()
    return process, line.split(" at ", 1)[1].split()[0]


def test_the_command_serves_until_sigint_and_exits_0(tiny_lm):
    process, url = start_command("--model", str(tiny_lm), "--port", "0", "--endpoint-name", "local-llm",
                                 "--threads", "1")
    try:
        assert request(url + "/ping", "GET")[0] == 200
        answer = sagemaker_runtime(url).invoke_endpoint(EndpointName="local-llm",
                                                        Body=json.dumps({"messages": ask("hello")}))
        assert json.loads(answer["Body"].read())["choices"][0]["message"]["content"] == TINY_CHATS["hello"]
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "ferry: stopped" in out
    assert "POST /endpoints/local-llm/invocations 200" in err  # one line a request


def test_the_command_on_a_port_in_use_fails_with_a_message(tiny_lm):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "ferry.cli", "serve-endpoint", "--model", str(tiny_lm),
                                 "--port", str(port)], cwd=ROOT, env=offline_env(), capture_output=True, text=True,
                                timeout=60, check=False)
    assert result.returncode == 1
    assert f"ferry: error: cannot listen on 127.0.0.1:{port}" in result.stderr


# -- the real model ----------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_smollm2_knows_the_capital_of_france():
    engine = Engine.load(smollm2_folder())
    answer = engine.chat(ask("What is the capital of France? Answer in one sentence."), Sampling(max_new_tokens=32))
    assert "Paris" in answer.text
    assert answer.finish_reason == "eos_token"
