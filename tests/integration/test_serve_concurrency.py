"""The local API serves requests side by side: with a stack concurrency of N, C requests at once to a slow route take
about the time of ceil(C/N) requests, not C, while a function whose template reserves a concurrency of 1 (as the
monitor does) still takes them one at a time; each process gets its share of the cores for ONNX Runtime.

Timings are compared with each other in the same run, never with a number of seconds."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from ferry.local.stack import LocalStack, free_port, ort_threads_per_process
from ferry.runtime.constants import ENV_ORT_THREADS

from helpers import http_api, offline_env, run_ferry

SLEEP_S = 0.4
CONCURRENCY = 3
REQUESTS = 6

PROBE = '''
import json
import os
import time


def handler(event, context):
    started = time.time()
    time.sleep(json.loads(event["body"])["sleep"])
    return {"statusCode": 200, "headers": {"content-type": "application/json"},
            "body": json.dumps({"pid": os.getpid(), "started": started, "ended": time.time(),
                                "ort_threads": os.environ.get("FERRY_ORT_THREADS")})}
'''

TEMPLATE = '''
Resources:
  SlowIntegration:
    Type: AWS::ApiGatewayV2::Integration
    Properties: {IntegrationUri: !GetAtt SlowFunction.Arn, PayloadFormatVersion: "2.0"}
  SlowRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties: {RouteKey: POST /slow, Target: !Sub "integrations/${SlowIntegration}"}
  SerialIntegration:
    Type: AWS::ApiGatewayV2::Integration
    Properties: {IntegrationUri: !GetAtt SerialFunction.Arn, PayloadFormatVersion: "2.0"}
  SerialRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties: {RouteKey: POST /serial, Target: !Sub "integrations/${SerialIntegration}"}
  SlowFunction:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: probe/, Handler: app.handler, Timeout: 30}
  SerialFunction:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: probe/, Handler: app.handler, Timeout: 30, ReservedConcurrentExecutions: 1}
'''


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    root = tmp_path_factory.mktemp("concurrency-project")
    (root / "probe").mkdir()
    (root / "probe" / "app.py").write_text(PROBE)
    (root / "layers").mkdir()
    (root / "template.yaml").write_text(TEMPLATE)
    environ = {name: value for name, value in os.environ.items() if name != ENV_ORT_THREADS}
    with (LocalStack(root=root, layers_dir=root / "layers", echo=None, concurrency=CONCURRENCY,
                     environ=environ) as stack,
          http_api(stack) as url):
        yield stack, url


def at_once(url: str, count: int) -> tuple[float, list[dict]]:
    """`count` requests sent at the same moment, each on a connection of its own: the wall time and the answers."""
    answers: list[dict] = []
    barrier = threading.Barrier(count + 1)

    def call() -> None:
        request = urllib.request.Request(url, data=json.dumps({"sleep": SLEEP_S}).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        barrier.wait()
        with urllib.request.urlopen(request, timeout=60) as response:
            answers.append(json.loads(response.read()))

    threads = [threading.Thread(target=call) for _ in range(count)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, answers


def most_at_once(answers: list[dict]) -> int:
    """The largest number of invocations that were running at the same moment."""
    events = sorted([(answer["started"], 1) for answer in answers] + [(answer["ended"], -1) for answer in answers],
                    key=lambda event: (event[0], event[1]))
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def test_concurrent_requests_take_the_time_of_ceil_c_over_n_not_c(api):
    stack, url = api
    assert stack.pool_size("SlowFunction") == CONCURRENCY and stack.pool_size("SerialFunction") == 1
    at_once(f"{url}/slow", CONCURRENCY)  # every process has answered once (their first invocation is no colder)
    serial_s, serial = at_once(f"{url}/serial", REQUESTS)
    parallel_s, parallel = at_once(f"{url}/slow", REQUESTS)
    assert len(serial) == len(parallel) == REQUESTS
    assert len({answer["pid"] for answer in serial}) == 1 and most_at_once(serial) == 1
    assert len({answer["pid"] for answer in parallel}) == CONCURRENCY
    assert most_at_once(parallel) == CONCURRENCY
    # ceil(6/3) = 2 rounds against 6: a third of the time, with room for a slow machine (a half, at most)
    expected = math.ceil(REQUESTS / CONCURRENCY) / REQUESTS
    assert parallel_s < serial_s * (expected + 0.2), (parallel_s, serial_s)


def test_each_process_gets_its_share_of_the_cores_for_onnx_runtime(api):
    _, url = api
    _, answers = at_once(f"{url}/slow", 1)
    assert answers[0]["ort_threads"] == str(ort_threads_per_process(CONCURRENCY))
    assert ort_threads_per_process(2, cpus=2) == 1 and ort_threads_per_process(4, cpus=2) == 1
    assert ort_threads_per_process(2, cpus=8) == 4 and ort_threads_per_process(1, cpus=8) == 8


def test_serve_refuses_a_concurrency_under_one(tmp_path: Path):
    result = run_ferry("serve", "--concurrency", "0", "--layers-dir", str(tmp_path))
    assert result.returncode == 2
    assert "--concurrency" in result.stderr


def test_ferry_serve_concurrency_runs_that_many_processes_of_a_function(tmp_path: Path):
    """`ferry serve --concurrency 2`, as a user runs it: two requests at once to one function overlap, in two
    processes, each told its share of the cores."""
    root = tmp_path / "project"
    (root / "probe").mkdir(parents=True)
    (root / "probe" / "app.py").write_text(PROBE)
    (root / "layers").mkdir()
    (root / "template.yaml").write_text(TEMPLATE)
    port = free_port()
    environ = {name: value for name, value in offline_env().items() if name != ENV_ORT_THREADS}
    server = subprocess.Popen(
        [sys.executable, "-m", "ferry.cli", "serve", "--port", str(port), "--layers-dir", str(root / "layers"),
         "--template", str(root / "template.yaml"), "--concurrency", "2"],
        cwd=root, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert server.stdout is not None
        for line in server.stdout:  # the banner says it serves once the stack is up
            if line.startswith("ferry: serving"):
                break
        else:
            raise AssertionError(f"ferry serve exited {server.wait()} without serving")
        _, answers = at_once(f"http://127.0.0.1:{port}/slow", 2)
        assert len({answer["pid"] for answer in answers}) == 2 and most_at_once(answers) == 2
        assert {answer["ort_threads"] for answer in answers} == {str(ort_threads_per_process(2))}
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=60) == 0
