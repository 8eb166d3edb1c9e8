"""tests/unit runs in seconds: no subprocess, no model, no network connection, and no fixture that builds a model.
Each is refused with an AssertionError that names the rule (tests/integration and tests/pipeline are the places for
them), during a unit test's setup (its fixtures, session ones included), call and teardown."""

from __future__ import annotations

import _posixsubprocess
import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import onnxruntime
import pytest

SUBPROCESS = "tests/unit runs no subprocess: move this test to tests/integration"
MODEL = "tests/unit loads no model: move this test to tests/pipeline or tests/integration"
NETWORK = "tests/unit opens no network connection: move this test to tests/integration"
# The session fixtures of tests/conftest.py that train or build a model (or need one that is).
MODEL_FIXTURES = frozenset({"tiny_bert", "tiny_distilbert", "bert_build", "distilbert_build", "model_copy",
                            "minilm_build", "serving_layers"})

# What starts a process: subprocess (and asyncio, os.popen) through Popen._execute_child, multiprocessing through
# os.fork or _posixsubprocess.fork_exec, os.spawn* through os.fork, the rest directly.
_PROCESS_STARTS = [(subprocess.Popen, "_execute_child"), (_posixsubprocess, "fork_exec")] + [
    (os, name) for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system", "execv", "execve")
    if hasattr(os, name)]
# What connects: socket.create_connection, http.client, urllib, botocore and asyncio all end in connect().
_CONNECTS = [(socket.socket, "connect"), (socket.socket, "connect_ex"), (socket.socket, "sendto")]
_MODEL_LOADS = [(onnxruntime.InferenceSession, "__init__")]


def _refuse(rule: str) -> Any:
    def refused(*_: Any, **__: Any) -> Any:
        raise AssertionError(rule)

    return refused


@contextlib.contextmanager
def unit_rules() -> Iterator[None]:
    """Within: starting a process, connecting a socket or making an ONNX Runtime session raises AssertionError."""
    with pytest.MonkeyPatch.context() as patch:
        for rule, targets in ((SUBPROCESS, _PROCESS_STARTS), (NETWORK, _CONNECTS), (MODEL, _MODEL_LOADS)):
            for owner, name in targets:
                patch.setattr(owner, name, _refuse(rule))
        yield


# Hook wrappers rather than an autouse fixture: they also hold while the fixtures a unit test asks for are set up,
# session-scoped ones included (a fixture set up before an autouse one would escape it). A conftest's hooks apply
# to the tests under its folder only.
@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Any:
    builders = sorted(MODEL_FIXTURES & set(getattr(item, "fixturenames", ())))
    if builders:
        raise AssertionError(f"{MODEL}: it asks for {', '.join(builders)}")
    with unit_rules():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    with unit_rules():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    with unit_rules():
        return (yield)
