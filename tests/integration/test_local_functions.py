"""Each local function runs in worker processes of its own, as in Lambda: its own environment and nothing of another
function's, even when both run at once; its errors, crashes and timeouts come back as Lambda reports them; its
log lines (C-level writes included) are filed before the invocation returns; and the process that runs the stack
keeps its environment and its stdout."""

from __future__ import annotations

import os
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from ferry.exceptions import FerryError
from ferry.local.exceptions import (
    FunctionError,
    FunctionExitError,
    FunctionInitError,
    FunctionTimeoutError,
    TemplateError,
)
from ferry.local.stack import LocalStack

from helpers import workers_of_this_process

PROBE = '''
import ctypes
import json
import os
import sys
import time

print("probe initialised")


def handler(event, context):
    action = event["action"]
    if action == "environment":
        started = time.time()
        time.sleep(event.get("sleep", 0))
        return {"pid": os.getpid(), "started": started, "ended": time.time(),
                "variables": {name: os.environ.get(name) for name in event["names"]},
                "remaining_ms": context.get_remaining_time_in_millis(), "request_id": context.aws_request_id}
    if action == "log":
        for number in range(event["lines"]):
            print(json.dumps({"line": number}))
        os.write(1, b"straight to the file descriptor\\n")
        ctypes.CDLL(None).printf(b"from the C library, buffered\\n")
        sys.stderr.write("on stderr\\n")
        sys.stderr.write("no newline at the end")
        return "logged"
    if action == "raise":
        raise ValueError("the input is wrong")
    if action == "exit":
        os._exit(3)
    if action == "sleep":
        print("sleeping", flush=True)
        time.sleep(event["seconds"])
        return "woke"
    if action == "answer":
        return event["answer"]
    if action == "object":
        return object()
    raise KeyError(action)
'''

TEMPLATE = '''
Resources:
  AlphaFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: probe/
      Handler: app.handler
      Timeout: 2
      Environment:
        Variables:
          PROBE_NAME: alpha
          ALPHA_ONLY: "a"
  BetaFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: probe/
      Handler: app.handler
      Timeout: 2
      Environment:
        Variables:
          PROBE_NAME: beta
          BETA_ONLY: "b"
'''

BROKEN = '''
Resources:
  AlphaFunction:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: probe/, Handler: app.handler}
  BrokenFunction:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: broken/, Handler: app.handler}
'''


def project(root: Path, template: str) -> Path:
    (root / "probe").mkdir(parents=True, exist_ok=True)
    (root / "probe" / "app.py").write_text(PROBE)
    (root / "broken").mkdir(exist_ok=True)
    (root / "broken" / "app.py").write_text(textwrap.dedent('''
        print("reading the configuration")
        raise RuntimeError("FERRY_SOMETHING is not set")
    '''))
    (root / "layers").mkdir(exist_ok=True)
    (root / "template.yaml").write_text(template)
    return root


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")


class Lines:
    """An echo that keeps every log line."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return project(tmp_path_factory.mktemp("probe-project"), TEMPLATE)


@pytest.fixture(scope="module")
def echoed() -> Lines:
    return Lines()


@pytest.fixture(scope="module")
def stack(root, echoed):
    with LocalStack(root=root, layers_dir=root / "layers", echo=echoed) as running:
        yield running


def environment_of(stack, function: str, sleep: float = 0.0) -> dict:
    names = ["PROBE_NAME", "ALPHA_ONLY", "BETA_ONLY", "AWS_LAMBDA_FUNCTION_NAME", "FERRY_PROBE_OVERRIDE",
             "NOT_FOR_FUNCTIONS", "AWS_ENDPOINT_URL", "TZ"]
    return stack.invoke(function, {"action": "environment", "names": names, "sleep": sleep})


def test_two_functions_at_once_each_see_only_their_own_environment(stack):
    answers: dict[str, dict] = {}
    threads = [threading.Thread(target=lambda name=name: answers.update({name: environment_of(stack, name, 0.5)}))
               for name in ("AlphaFunction", "BetaFunction")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    alpha, beta = answers["AlphaFunction"], answers["BetaFunction"]
    assert alpha["started"] < beta["ended"] and beta["started"] < alpha["ended"]  # they did run at the same time
    assert alpha["pid"] != beta["pid"] and os.getpid() not in (alpha["pid"], beta["pid"])
    assert {k: v for k, v in alpha["variables"].items() if k not in ("AWS_ENDPOINT_URL", "TZ")} == {
        "PROBE_NAME": "alpha", "ALPHA_ONLY": "a", "BETA_ONLY": None, "AWS_LAMBDA_FUNCTION_NAME": "AlphaFunction",
        "FERRY_PROBE_OVERRIDE": None, "NOT_FOR_FUNCTIONS": None}
    assert beta["variables"]["PROBE_NAME"] == "beta" and beta["variables"]["ALPHA_ONLY"] is None
    assert beta["variables"]["BETA_ONLY"] == "b" and beta["variables"]["AWS_LAMBDA_FUNCTION_NAME"] == "BetaFunction"
    assert alpha["variables"]["AWS_ENDPOINT_URL"] == stack.endpoint and alpha["variables"]["TZ"] == ":UTC"
    assert 0 < alpha["remaining_ms"] <= 2000 - 500  # its Timeout, less what it slept


def test_a_function_inherits_only_the_variables_meant_for_it(root, monkeypatch):
    monkeypatch.setenv("FERRY_PROBE_OVERRIDE", "on")  # FERRY_*: a setting the developer may pass to the functions
    monkeypatch.setenv("NOT_FOR_FUNCTIONS", "secret of the test process")
    with LocalStack(root=root, layers_dir=root / "layers", echo=None) as running:
        seen = environment_of(running, "AlphaFunction")["variables"]
    assert seen["FERRY_PROBE_OVERRIDE"] == "on" and seen["NOT_FOR_FUNCTIONS"] is None


def test_starting_and_stopping_a_stack_leaves_this_process_as_it_was(root):
    environment, stdout, stderr = dict(os.environ), sys.stdout, sys.stderr
    running = LocalStack(root=root, layers_dir=root / "layers", echo=None).start()
    try:
        assert dict(os.environ) == environment and sys.stdout is stdout and sys.stderr is stderr
        assert running.invoke("AlphaFunction", {"action": "answer", "answer": 1}) == 1
    finally:
        running.stop()
    assert dict(os.environ) == environment and sys.stdout is stdout and sys.stderr is stderr


def test_every_log_line_is_filed_before_the_invocation_returns(stack, echoed):
    before = len(echoed.lines)
    assert stack.invoke("AlphaFunction", {"action": "log", "lines": 200}) == "logged"
    lines = echoed.lines[before:]  # no waiting: the invocation returned, so its lines are all there
    assert [line for line in lines if line.startswith('{"line"')] == [f'{{"line": {n}}}' for n in range(200)]
    assert {"no newline at the end", "straight to the file descriptor", "from the C library, buffered",
            "on stderr"} <= set(lines)
    assert not any("ferry-local" in line for line in lines)  # the flush markers are no log lines
    assert "probe initialised" in echoed.lines  # what the module prints at init is the function's log too


def test_an_error_is_raised_as_lambda_reports_it_and_the_worker_stays_warm(stack):
    pid = environment_of(stack, "AlphaFunction")["pid"]
    with pytest.raises(FunctionError) as raised:
        stack.invoke("AlphaFunction", {"action": "raise"})
    error = raised.value
    assert (error.function, error.error_type, error.error_message) == ("AlphaFunction", "ValueError",
                                                                      "the input is wrong")
    assert str(error) == "AlphaFunction: ValueError: the input is wrong" and isinstance(error, FerryError)
    assert "app.py" in error.stack_trace[-1] and not any("worker.py" in frame for frame in error.stack_trace)
    assert environment_of(stack, "AlphaFunction")["pid"] == pid
    with pytest.raises(FunctionError, match=r"Runtime\.MarshalError"):
        stack.invoke("AlphaFunction", {"action": "object"})


def test_a_worker_that_dies_is_reported_and_started_again(stack):
    pid = environment_of(stack, "BetaFunction")["pid"]
    with pytest.raises(FunctionExitError, match=r"Runtime\.ExitError: .* exited with status 3"):
        stack.invoke("BetaFunction", {"action": "exit"})
    answer = environment_of(stack, "BetaFunction")  # a cold start
    assert answer["pid"] != pid and answer["variables"]["PROBE_NAME"] == "beta"


def test_an_invocation_past_the_timeout_is_ended_and_the_next_one_starts_afresh(stack, echoed):
    pid = environment_of(stack, "AlphaFunction")["pid"]
    before, started = len(echoed.lines), time.monotonic()
    timed_out = r"Sandbox.Timedout: \S+ Task timed out after 2.00 seconds"
    with pytest.raises(FunctionTimeoutError, match=timed_out) as raised:
        stack.invoke("AlphaFunction", {"action": "sleep", "seconds": 30})
    assert 1.9 < time.monotonic() - started < 6
    request_id = raised.value.error_message.split()[0]
    lines = echoed.lines[before:]  # this invocation's, as Lambda logs them
    assert lines == ["sleeping", f"{request_id} Task timed out after 2.00 seconds"]
    assert environment_of(stack, "AlphaFunction")["pid"] != pid


def test_a_pool_runs_one_function_twice_at_the_same_time(root):
    with LocalStack(root=root, layers_dir=root / "layers", echo=None, concurrency=2) as running:
        answers: list[dict] = []
        threads = [threading.Thread(target=lambda: answers.append(environment_of(running, "AlphaFunction", 0.5)))
                   for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers[0]["pid"] != answers[1]["pid"]
        assert answers[0]["started"] < answers[1]["ended"] and answers[1]["started"] < answers[0]["ended"]


@needs_proc
def test_an_init_error_fails_the_start_with_the_log_and_leaves_nothing_running(tmp_path):
    root = project(tmp_path, BROKEN)
    before = set(workers_of_this_process())  # the module's stack's
    with pytest.raises(FunctionInitError) as raised:
        LocalStack(root=root, layers_dir=root / "layers", echo=None).start()
    error = raised.value
    assert (error.function, error.error_type) == ("BrokenFunction", "RuntimeError")
    assert error.error_message.startswith("FERRY_SOMETHING is not set; its log ended with:")
    assert "reading the configuration" in error.error_message and "[ERROR] RuntimeError" in error.error_message
    assert set(workers_of_this_process()) == before  # the healthy function's worker was stopped too


@needs_proc
def test_stopping_a_stack_ends_its_workers(root):
    running = LocalStack(root=root, layers_dir=root / "layers", echo=None).start()
    pids = [pid for function in running.functions.values() for pid in function.pids]
    assert len(pids) == 2 and set(pids) <= set(workers_of_this_process())
    running.stop()
    assert not set(pids) & set(workers_of_this_process())


def test_a_template_error_is_a_ferry_error_with_its_exit_status(tmp_path):
    (tmp_path / "template.yaml").write_text("Resources: {}\nOutputs: [")
    with pytest.raises(TemplateError) as raised:
        LocalStack(root=tmp_path, layers_dir=tmp_path)
    assert isinstance(raised.value, FerryError) and raised.value.code == "invalid_template"
    assert raised.value.exit_status == 2
