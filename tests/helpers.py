"""Plain helpers the tests import (`from helpers import ...`): paths, the offline environment, the `ferry` command in
a subprocess, the gate of the tiny models, a layer built from a tiny model, a time window of the embedded
CloudWatch, `ferry serve` over HTTP, and batch files through the local stack. Fixtures live in conftest.py; nothing
here is one, and nothing here imports more than the standard library until it is called."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TINY_GATE = {"max_accuracy_drop": 2.0, "min_agreement": 0.95}  # tiny models: one text in 300 is 0.33 points


def offline_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1", **extra}


def run_ferry(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, stdin: str | None = None,
              timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The `ferry` command in a subprocess, exactly as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "ferry.cli", *args], cwd=cwd or ROOT, env=env or offline_env(), input=stdin,
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def build_tiny_layer(model: Path, out: Path, name: str, eval_data: Path | None, **gate: float):
    """A text-classification layer of a tiny model, through the real build, with the tiny models' gate."""
    from ferry.layer import BuildConfig, GateThresholds, build_layer

    config = BuildConfig(model=str(model), task="text-classification", out=out, name=name, eval_data=eval_data,
                         gate=GateThresholds(**{**TINY_GATE, **gate}))
    return build_layer(config)


class MetricWindow:
    """The embedded CloudWatch's statistics from the start of this window on: what one test made, and nothing an
    earlier test made, whenever that arrives (a datum carries the time it was made: an EMF line's Timestamp, a
    Powertools flush). moto reads StartTime to the second, so the window opens at the next whole second, once the
    clock has passed it (at most a second's wait)."""

    def __init__(self, cloudwatch: Any, namespace: str = "Ferry"):
        self.cloudwatch, self.namespace = cloudwatch, namespace
        self.start = math.floor(time.time()) + 1
        time.sleep(max(0.0, self.start - time.time()) + 0.01)

    def statistics(self, name: str, dimensions: Mapping[str, str]) -> tuple[float, float]:
        """(Sum, SampleCount) of `name` with these dimensions (a datum may carry more) since the window opened."""
        answer = self.cloudwatch.get_metric_statistics(
            Namespace=self.namespace, MetricName=name,
            Dimensions=[{"Name": key, "Value": value} for key, value in dimensions.items()],
            StartTime=datetime.fromtimestamp(self.start, tz=UTC), EndTime=datetime.fromtimestamp(time.time() + 60,
                                                                                                  tz=UTC),
            Period=60, Statistics=["Sum", "SampleCount"])
        points = answer["Datapoints"]
        return sum(point["Sum"] for point in points), sum(point["SampleCount"] for point in points)

    def total(self, name: str, dimensions: Mapping[str, str]) -> float:
        return self.statistics(name, dimensions)[0]

    def await_totals(self, expected: Mapping[tuple[str, tuple[tuple[str, str], ...]], float],
                     timeout: float = 15) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The sums of {(name, dimension items): expected sum} once each has reached its expected sum (or the time
        is up): the caller asserts they are equal, so a metric counted twice fails as one never counted does."""
        return wait_for(lambda: {key: self.total(key[0], dict(key[1])) for key in expected},
                        lambda seen: all(seen[key] >= value for key, value in expected.items()), timeout)


def wait_for(measure: Callable[[], Any], done: Callable[[Any], bool], timeout: float, every: float = 0.2) -> Any:
    """`measure()` again every `every` seconds until `done` holds for it or `timeout` seconds have passed; the
    last measure either way (the caller asserts what it expects of it)."""
    deadline = time.monotonic() + timeout
    seen = measure()
    while not done(seen) and time.monotonic() < deadline:
        time.sleep(every)
        seen = measure()
    return seen


# -- `ferry serve` over HTTP ---------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """`ferry serve` in a subprocess on a free port, once its banner says where it serves; its output kept."""

    def __init__(self, layers: Path, *extra: str, env: dict[str, str] | None = None):
        self.port = free_port()
        env = offline_env(**(env or {}))
        env.pop("HF_HUB_OFFLINE")  # InferenceClient refuses even 127.0.0.1 when it is set (STACK.md)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ferry.cli", "serve", "--port", str(self.port), "--layers-dir", str(layers), *extra],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        seen = []
        for _ in range(200):  # the banner comes after the stack is up; function logs may come first
            line = self.process.stdout.readline()
            seen.append(line)
            match = re.search(r"at (http://\S+) \(embedded AWS at (http://\S+)\)", line)
            if match or not line:
                break
        assert match, "".join(seen)
        self.url, self.aws = match.group(1), match.group(2)
        self.lines: list[str] = []
        # keep reading the server's output, or its logs would fill the pipe and stall it
        self._drain = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self._drain.start()

    def request(self, method: str, path: str, body=None, headers=None, raw: bytes | None = None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Content-Type": "application/json", **(headers or {})} if data is not None else (headers or {})
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), json.loads(error.read() or b"null")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=15)
        self._drain.join(timeout=5)
        return code


# -- batch files through the local stack ---------------------------------------------------------------------------

def drop(stack: Any, tmp_path: Path, name: str, data: bytes, model: str = "tiny-bert") -> dict[str, Any]:
    """Put a file under the batch bucket's input/<model>/ as S3 would notify the batch function: its outcome."""
    from ferry.runtime.batch import input_key

    source = tmp_path / name
    source.write_bytes(data)
    return stack.drop_file("BatchBucket", input_key(model, name), source)["results"][0]


def outputs(stack: Any, outcome: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    """The predictions and the error lines of a finished file, checked against its accounting."""
    from ferry.runtime.batch import output_keys_of

    s3, bucket = stack.client("s3"), stack.table_names["BatchBucket"]
    rows = [json.loads(line) for line in s3.get_object(Bucket=bucket, Key=outcome["output"])["Body"].iter_lines()]
    errors_key = outcome["errors_output"]
    assert errors_key == output_keys_of(outcome["output"]).errors
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=errors_key).get("Contents", [])
    errors = ([json.loads(line) for line in s3.get_object(Bucket=bucket, Key=errors_key)["Body"].iter_lines()]
              if listed else [])
    assert outcome["predicted"] + outcome["errors"] == outcome["records"]
    assert (len(rows), len(errors)) == (outcome["predicted"], outcome["errors"])
    assert sorted(row["line"] for row in rows + errors) == sorted({row["line"] for row in rows + errors})
    return rows, errors


def nothing_left(stack: Any, prefix: str) -> bool:
    """No object and no multipart upload under `prefix`: a failed file leaves nothing behind."""
    s3, bucket = stack.client("s3"), stack.table_names["BatchBucket"]
    return (not s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents")
            and not s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads"))


def mocked_s3(monkeypatch: Any, bucket: str) -> Iterator[Any]:
    """An S3 client on moto's in-process mock with `bucket` created (for a fixture to `yield from`): dummy
    credentials, and no endpoint a local stack may have left in the environment."""
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=bucket)
        yield client


@contextlib.contextmanager
def template_tables(monkeypatch: Any, *logical_ids: str) -> Iterator[dict[str, Any]]:
    """moto's in-process DynamoDB with the template's tables of `logical_ids` (their key schemas read from
    template.yaml, so a test cannot drift from it), by logical id."""
    import boto3
    from moto import mock_aws

    from ferry.local import template as tpl

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        dynamodb = boto3.resource("dynamodb", region_name="us-east-1")
        made = {}
        for logical_id, arguments in tpl.tables(tpl.load_template(ROOT / "template.yaml")).items():
            if logical_id in logical_ids:
                dynamodb.create_table(**arguments)
                made[logical_id] = dynamodb.Table(arguments["TableName"])
        yield made


def workers_of_this_process() -> list[int]:
    """The live function worker processes this process started (Linux: /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        state, parent = stat[stat.rindex(")") + 2:].split()[:2]
        if int(parent) == os.getpid() and state != "Z" and b"ferry.local.worker" in command:
            found.append(int(entry))
    return found


@contextlib.contextmanager
def http_api(stack: Any, *, authorize: bool = False) -> Iterator[str]:
    """The local HTTP API of a started `stack` on a free port of 127.0.0.1, as `ferry serve` runs it: its URL.
    `authorize`: every protected route goes through the template's authorizer (`ferry serve --api-key`)."""
    from ferry.local.gateway import Gateway

    gateway = Gateway(stack, "127.0.0.1", 0)
    gateway.authorize = authorize
    gateway.serve_in_background()
    try:
        yield gateway.url
    finally:
        gateway.shutdown()
        gateway.server_close()
