"""`ferry serve` stops on SIGINT or SIGTERM whenever it comes, and leaves no process behind.

A signal handler that took a lock once deadlocked the server: it sat in ``Event.set()`` inside the handler while
the main thread held the event's lock in ``Event.wait()``, and ignored every later SIGINT and SIGTERM. Here the
server is started and signalled many times at random moments (while it starts, idle, with a request in flight,
and killed outright); each time it must exit within seconds, with status 0 once it has served (128 + the signal
when the signal came before it served), and none of its processes may outlive it.

Each server runs in a session of its own, so its embedded AWS and its function workers share its process group:
what is left of the group once the server has exited is what it left behind.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ferry.local import template as tpl
from ferry.local.stack import free_port

from helpers import ROOT, offline_env

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")

FUNCTIONS = len(tpl.functions(tpl.load_template(ROOT / "template.yaml"), ROOT))  # a worker each
EXIT_WITHIN_S = 8.0  # generous: the machine may be busy with other tests; an exit takes well under a second

SLOW_TEMPLATE = """
Resources:
  SlowFunction:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: slow/, Handler: app.handler, Timeout: 60}
  SlowIntegration:
    Type: AWS::ApiGatewayV2::Integration
    Properties: {IntegrationUri: !GetAtt SlowFunction.Arn}
  SlowRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties: {RouteKey: GET /slow, Target: !Sub "integrations/${SlowIntegration}"}
"""

SLOW_HANDLER = """
import time


def handler(event, context):
    print("request in flight", flush=True)
    time.sleep(60)
    return {"statusCode": 200, "body": "too late"}
"""


def group_members(group: int) -> list[int]:
    """Live processes of a process group (zombies are gone already: nothing more to end)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except (OSError, ValueError):
            continue
        state, _parent, pgrp = stat[stat.rindex(")") + 2:].split()[:3]
        if int(pgrp) == group and state != "Z":
            found.append(int(entry))
    return found


class Serve:
    """`ferry serve` in a session of its own, its output read as it comes."""

    def __init__(self, layers: Path, *extra: str):
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ferry.cli", "serve", "--port", str(self.port), "--layers-dir", str(layers), *extra],
            cwd=ROOT, env=offline_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        self.out: list[str] = []
        self.err: list[str] = []
        self.starting, self.serving, self.in_flight = threading.Event(), threading.Event(), threading.Event()
        self._readers = [threading.Thread(target=self._read, args=(self.process.stdout, self.out), daemon=True),
                         threading.Thread(target=self._read, args=(self.process.stderr, self.err), daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)
            if line.startswith("ferry: starting"):
                self.starting.set()
            elif line.startswith("ferry: serving"):
                self.serving.set()
            elif "request in flight" in line:
                self.in_flight.set()

    def output(self) -> str:
        return "".join(self.out) + "".join(self.err)

    def stop(self, number: int) -> tuple[int, float]:
        """Send a signal and wait for the exit: (status, seconds it took)."""
        started = time.monotonic()
        self.process.send_signal(number)
        try:
            code = self.process.wait(timeout=EXIT_WITHIN_S + 20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"still running {EXIT_WITHIN_S + 20:.0f} s after {signal.Signals(number).name}:\n"
                                 + self.output()[-3000:]) from None
        for reader in self._readers:
            reader.join(timeout=5)
        return code, time.monotonic() - started

    def left_behind(self, wait: float = 0.0) -> list[int]:
        deadline = time.monotonic() + wait
        while (members := group_members(self.process.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return members

    def kill_group(self) -> None:
        """Test cleanup: nothing of a failed run may outlive the test."""
        if group_members(self.process.pid):
            os.killpg(self.process.pid, signal.SIGKILL)


def get(url: str, timeout: float = 30) -> int | str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
        return type(error).__name__


@pytest.fixture(scope="module")
def empty_layers(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("no-models")


@pytest.fixture(scope="module")
def slow_project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("slow-project")
    (root / "slow").mkdir()
    (root / "slow" / "app.py").write_text(SLOW_HANDLER)
    (root / "template.yaml").write_text(SLOW_TEMPLATE)
    return root


# (moment, count): 14 servers, in an order shuffled by the seed
MOMENTS = [("starting", 5), ("idle", 4), ("in flight", 3), ("killed", 2)]


def test_serve_always_stops_on_a_signal_and_leaves_nothing_behind(empty_layers, slow_project):
    seed = int.from_bytes(os.urandom(4), "big")
    chance = random.Random(seed)
    plan = [moment for moment, count in MOMENTS for _ in range(count)]
    chance.shuffle(plan)
    took = []
    for run, moment in enumerate(plan):
        number = chance.choice([signal.SIGINT, signal.SIGTERM])
        what = f"run {run} ({moment}, {number.name}; seed {seed})"
        extra = ("--template", str(slow_project / "template.yaml")) if moment == "in flight" else ()
        server = Serve(empty_layers, *extra)
        try:
            took.append(signal_once(server, moment, number, chance, what))
        finally:
            server.kill_group()
    print(f"exits after a signal: {', '.join(f'{seconds:.2f}' for seconds in took)} s (seed {seed})")


def signal_once(server: Serve, moment: str, number: signal.Signals, chance: random.Random, what: str) -> float:
    """Signal `server` at `moment` and check how it ends: the seconds it took to exit."""
    assert server.starting.wait(30), f"{what}: never started\n{server.output()}"
    if moment == "starting":
        time.sleep(chance.uniform(0, 3))  # anywhere from the first import to the stack being up, or just after
        served_before = server.serving.is_set()
        code, took = server.stop(number)
        allowed = {0} if served_before else {0, 128 + number}
        assert code in allowed, f"{what}: exit status {code}\n{server.output()}"
    else:
        assert server.serving.wait(60), f"{what}: no banner\n{server.output()}"
        members = server.left_behind()
        functions = 1 if moment == "in flight" else FUNCTIONS
        assert len(members) == 2 + functions, f"{what}: {members}"  # the server, moto, a worker a function
        url = f"http://127.0.0.1:{server.port}"
        answer: list[int | str] = []
        client = threading.Thread(target=lambda: answer.append(get(f"{url}/slow")), daemon=True)
        if moment == "in flight":
            client.start()
            assert server.in_flight.wait(30), f"{what}: the request never reached the function"
        else:
            assert get(f"{url}/healthz") == 503  # no models: served, and answered
            time.sleep(chance.uniform(0, 0.3))
        if moment == "killed":
            code, took = server.stop(signal.SIGKILL)
            assert code == -signal.SIGKILL
            assert server.left_behind(wait=EXIT_WITHIN_S) == [], f"{what}: workers outlived the server"
            return took
        code, took = server.stop(number)
        assert code == 0, f"{what}: exit status {code}\n{server.output()}"
        assert "ferry: stopped" in "".join(server.out)
        if moment == "in flight":
            client.join(timeout=10)
            assert answer and answer[0] != 200, f"{what}: {answer}"  # a 500, or the connection closed
    assert took < EXIT_WITHIN_S, f"{what}: took {took:.1f} s to exit\n{server.output()}"
    assert server.left_behind() == [], f"{what}: processes left behind"
    crashes = [line for line in server.err if line.startswith("Traceback")]  # not a function's JSON log of one
    assert not crashes, f"{what}\n{server.output()}"
    return took


CHILD = "import time; time.sleep(0.5); from ferry.local.signals import ignore_sigint; ignore_sigint(); print('alive')"


@pytest.mark.parametrize("blocked", [True, False])
def test_a_child_started_with_sigint_blocked_survives_a_ctrl_c_before_it_can_ignore_it(blocked):
    """The window a Ctrl-C used to hit: the child's interpreter starting, before its code ignores SIGINT."""
    from ferry.local.signals import sigint_blocked

    with sigint_blocked() if blocked else contextlib.nullcontext():
        child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=offline_env())
    child.send_signal(signal.SIGINT)  # at once: it is still starting
    out, err = child.communicate(timeout=30)
    if blocked:
        assert (child.returncode, out.strip(), err) == (0, "alive", "")
    else:  # what the stack's children did before: killed by it, or KeyboardInterrupt with a traceback
        assert child.returncode != 0 and out == ""
