"""The rules of tests/unit hold (tests/unit/conftest.py): a process, a model or a connection is refused, naming the
rule, in a test and in the fixtures it asks for."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import subprocess
import sys
import urllib.request

import pytest

SUBPROCESS = "tests/unit runs no subprocess: move this test to tests/integration"
MODEL = "tests/unit loads no model"
NETWORK = "tests/unit opens no network connection"


def _fork() -> None:
    if os.fork() == 0:  # were the rule broken, the child must not go on running the tests
        os._exit(0)


@pytest.mark.parametrize("start", [
    lambda: subprocess.run([sys.executable, "-c", "pass"], check=False),
    lambda: subprocess.check_output(["true"]),
    lambda: subprocess.Popen(["true"]),
    lambda: os.system("true"),
    lambda: os.popen("true").read(),
    _fork,
    lambda: os.posix_spawn("/bin/true", ["true"], os.environ),
    lambda: os.spawnv(os.P_WAIT, "/bin/true", ["true"]),
    lambda: multiprocessing.get_context("fork").Process(target=print).start(),
    lambda: multiprocessing.get_context("spawn").Process(target=print).start(),
    lambda: asyncio.run(asyncio.create_subprocess_exec("true")),
], ids=["run", "check_output", "Popen", "system", "popen", "fork", "posix_spawn", "spawnv", "mp-fork", "mp-spawn",
        "asyncio"])
def test_starting_a_process_is_refused(start):
    with pytest.raises(AssertionError, match=SUBPROCESS):
        start()


def test_an_onnx_runtime_session_is_refused(tmp_path):
    import onnxruntime

    from ferry.runtime import predictor

    with pytest.raises(AssertionError, match=MODEL):
        onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    with pytest.raises(AssertionError, match=MODEL):  # as the runtime names it
        predictor.ort.InferenceSession(b"not a model")


@pytest.mark.parametrize("connect", [
    lambda: socket.create_connection(("127.0.0.1", 9), timeout=1),
    lambda: socket.socket().connect_ex(("127.0.0.1", 9)),
    lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", 9)),
    lambda: socket.socket(socket.AF_UNIX).connect("/tmp/nothing.sock"),
    lambda: urllib.request.urlopen("http://127.0.0.1:9/", timeout=1),
], ids=["create_connection", "connect_ex", "sendto", "unix", "urlopen"])
def test_a_network_connection_is_refused(connect):
    with pytest.raises(AssertionError, match=NETWORK):
        connect()


def test_a_boto3_call_is_refused():
    import boto3
    from botocore.config import Config
    from botocore.exceptions import HTTPClientError

    client = boto3.client("s3", region_name="us-east-1", endpoint_url="http://127.0.0.1:9", aws_access_key_id="x",
                          aws_secret_access_key="x", config=Config(retries={"total_max_attempts": 1}))
    with pytest.raises(HTTPClientError, match=NETWORK):  # botocore wraps what its HTTP client raises
        client.list_buckets()


def test_what_a_unit_test_may_do_still_works(tmp_path):
    left, right = socket.socketpair()  # asyncio's own wake-up pipe: not a connection
    with left, right:
        left.sendall(b"x")
        assert right.recv(1) == b"x"
    assert asyncio.run(asyncio.sleep(0, result=7)) == 7
    (tmp_path / "a").write_text("b")
    assert (tmp_path / "a").read_text() == "b"


@pytest.fixture(scope="session")
def _process_in_a_session_fixture() -> str:
    """A session fixture set up for a unit test is held to the rules too (it would escape an autouse fixture)."""
    try:
        subprocess.run(["true"], check=False)
    except AssertionError as refused:
        return str(refused)
    return "not refused"


def test_fixtures_a_unit_test_asks_for_are_held_to_the_rules(_process_in_a_session_fixture):
    assert _process_in_a_session_fixture == SUBPROCESS


class _AskingFor:
    """What the setup hook reads of a test: the fixtures it asks for."""

    def __init__(self, *fixturenames: str):
        self.fixturenames = fixturenames


def test_a_unit_test_asking_for_a_model_fixture_errors_before_its_setup(request):
    from pathlib import Path

    rules = request.config.pluginmanager.get_plugin(str(Path(__file__).with_name("conftest.py")))
    setup = rules.pytest_runtest_setup(_AskingFor("tmp_path", "bert_build", "tiny_bert"))
    with pytest.raises(AssertionError, match=f"^{MODEL}.*: it asks for bert_build, tiny_bert$"):
        next(setup)
    allowed = rules.pytest_runtest_setup(_AskingFor("tmp_path", "tweets"))
    next(allowed)  # no model fixture: the setup goes on, under the rules
    with pytest.raises(AssertionError, match=SUBPROCESS):
        subprocess.run(["true"], check=False)
    allowed.close()
