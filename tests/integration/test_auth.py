"""API keys end to end against the embedded AWS (a moto server): `ferry keys create/list/revoke` through the
command line, the capture function counting each key's daily usage, the authorizer enforcing quotas, and what
`ferry serve` says at start when it is open to the network or protected by a key."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest

from ferry.local.stack import LocalStack, free_port
from ferry.runtime.capture import capture_line, encode_subscription_event
from ferry.runtime.keys import usage_of, utc_day

from helpers import ROOT, offline_env, run_ferry


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The template's tables and functions on a moto server; no models are needed here."""
    with LocalStack(root=ROOT, layers_dir=tmp_path_factory.mktemp("no-models")) as running:
        yield running


def aws_env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in offline_env().items() if not name.startswith("AWS_")}
    return {**env, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true", **extra}


def keys(stack, *args: str, env: dict[str, str] | None = None):
    return run_ferry("keys", *args, "--endpoint-url", stack.endpoint, env=env or aws_env(), timeout=120)


def one_line_error(result) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("ferry: error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def created(result) -> tuple[str, str]:
    """The key `ferry keys create` printed (alone, on stdout) and the id it named on stderr."""
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    identifier = re.search(r"key ([0-9a-f]{16}) ", result.stderr).group(1)
    assert key.startswith(f"fry_{identifier}_") and key not in result.stderr
    return key, identifier


def listed(stack, *extra: str) -> dict[str, dict]:
    result = keys(stack, "list", "--table", "KeysTable", "--json", *extra)
    assert result.returncode == 0, result.stderr
    return {entry["key_id"]: entry for entry in json.loads(result.stdout)}


def authorize(stack, key: str) -> dict:
    event = json.loads((ROOT / "events" / "authorizer.json").read_text())
    event["headers"]["authorization"] = event["identitySource"][0] = f"Bearer {key}"
    return stack.invoke("AuthorizerFunction", event)


def capture_event(records: list[dict]) -> dict:
    lines = [(record["epoch_ms"], capture_line(record, service="ferry-predict", request_id="r")) for record in records]
    return encode_subscription_event("/aws/lambda/PredictFunction", "local", lines)


def test_keys_create_list_and_revoke_through_the_cli(stack):
    key, identifier = created(keys(stack, "create", "--table", "KeysTable", "--name", "ci", "--daily-quota", "5"))
    _, plain = created(keys(stack, "create", "--table", "KeysTable", "--name", "plain"))
    entries = listed(stack, "--usage-table", "UsageTable")
    assert entries[identifier]["name"] == "ci" and entries[identifier]["daily_quota"] == 5
    assert entries[identifier]["revoked"] is False and entries[identifier]["used_today"] == 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entries[identifier]["created"])
    assert entries[plain]["daily_quota"] is None and listed(stack)[plain]["used_today"] is None
    table = keys(stack, "list", "--table", "KeysTable")
    assert table.returncode == 0 and table.stdout.startswith("ID ") and "stack default" in table.stdout
    assert key not in table.stdout + json.dumps(entries)  # the key itself is never shown again

    assert authorize(stack, key)["isAuthorized"] is True
    revoked = keys(stack, "revoke", identifier, "--table", "KeysTable")
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert listed(stack)[identifier]["revoked"] is True
    assert authorize(stack, key) == {"isAuthorized": False}
    assert keys(stack, "revoke", identifier, "--table", "KeysTable").stdout.strip().endswith("already revoked")


def test_revoking_an_unknown_id_is_a_clear_error_that_creates_nothing(stack):
    before = len(listed(stack))
    message = one_line_error(keys(stack, "revoke", "00000000000000ff", "--table", "KeysTable"))
    assert "no key 00000000000000ff" in message
    assert len(listed(stack)) == before


@pytest.mark.parametrize(("args", "code", "message"), [
    (("list", "--table", "NoSuchTable"), 1, "no table NoSuchTable"),
    (("create", "--table", "NoSuchTable"), 1, "no table NoSuchTable"),
    (("revoke", "00000000000000ff", "--table", "NoSuchTable"), 1, "no table NoSuchTable"),
    (("list", "--table", "KeysTable", "--usage-table", "NoSuchTable"), 1, "no table NoSuchTable"),
    (("revoke", "not-an-id", "--table", "KeysTable"), 2, "is not a key id"),
    (("create", "--table", "KeysTable", "--daily-quota", "-1"), 2, "is negative"),
    (("create", "--table", "KeysTable", "--daily-quota", "many"), 2, "not a whole number"),
])
def test_errors_are_one_line_and_a_non_zero_exit(stack, args, code, message):
    result = keys(stack, *args)
    assert result.returncode == code and message in result.stderr and "Traceback" not in result.stderr
    if code == 1:
        one_line_error(result)


def test_no_credentials_or_no_region_is_one_line(stack, tmp_path):
    missing = str(tmp_path / "missing")
    bare = {name: value for name, value in aws_env().items() if name not in {"AWS_ACCESS_KEY_ID",
                                                                             "AWS_SECRET_ACCESS_KEY"}}
    bare.update(AWS_SHARED_CREDENTIALS_FILE=missing, AWS_CONFIG_FILE=missing)
    assert "credentials" in one_line_error(keys(stack, "list", "--table", "KeysTable", env=bare))
    no_region = {**aws_env(AWS_CONFIG_FILE=missing)}
    no_region.pop("AWS_DEFAULT_REGION")
    assert "region" in one_line_error(keys(stack, "create", "--table", "KeysTable", env=no_region))


def test_new_captures_count_once_and_the_authorizer_flips_at_the_quota(stack):
    key, identifier = created(keys(stack, "create", "--table", "KeysTable", "--name", "q", "--daily-quota", "3"))
    now_ms = int(time.time() * 1000)
    records = [{"prediction_id": f"{identifier}{n:016x}", "model": "sentiment", "version": "0123456789ab",
                "time": "t", "epoch_ms": now_ms, "label": "positive", "score": 0.9, "key_id": identifier}
               for n in range(2)]
    anonymous = {**records[0], "prediction_id": "f" * 32, "key_id": None}
    first = capture_event([*records, anonymous])
    assert authorize(stack, key)["context"] == {"key_id": identifier, "scopes": "predict", "quota_exceeded": False}
    assert stack.invoke("CaptureFunction", first) == {"written": 3, "duplicates": 0, "invalid": 0}
    assert stack.invoke("CaptureFunction", first) == {"written": 0, "duplicates": 3, "invalid": 0}  # redelivery
    table = stack.resource("dynamodb").Table("UsageTable")
    assert usage_of(table, identifier, utc_day(now_ms / 1000)) == 2
    counted = [(item["key_id"], item["day"], item["predictions"]) for item in table.scan()["Items"]]
    assert counted == [(identifier, utc_day(now_ms / 1000), 2)]  # none for the capture without a key
    assert authorize(stack, key)["context"]["quota_exceeded"] is False
    third = {**records[0], "prediction_id": f"{identifier}{9:016x}"}
    stack.invoke("CaptureFunction", capture_event([third]))
    context = authorize(stack, key)["context"]
    assert context["quota_exceeded"] is True and 0 < context["retry_after"] <= 86_400
    assert listed(stack, "--usage-table", "UsageTable")[identifier]["used_today"] == 3


def _serve(*args: str, layers) -> tuple[str, str]:
    """Start `ferry serve`, wait for its banner, stop it: (stdout, stderr)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "ferry.cli", "serve", "--port", str(free_port()), "--layers-dir", str(layers), *args],
        cwd=ROOT, env=offline_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for _ in range(200):
            line = process.stdout.readline()
            seen.append(line)
            if not line or "curl" in line:
                break
        process.send_signal(signal.SIGINT)
        rest, errors = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, errors
    return "".join(seen) + rest, errors


def test_serve_on_the_network_without_a_key_warns_loudly(tmp_path):
    out, errors = _serve("--host", "0.0.0.0", layers=tmp_path)
    assert "serving" in out
    assert "WARNING: serving on 0.0.0.0 without --api-key" in errors and "--api-key KEY" in errors


def test_serve_never_echoes_the_key(tmp_path):
    key = "fry_0123456789abcdef_serve-test-secret-value"
    out, errors = _serve("--api-key", key, layers=tmp_path)
    assert 'Authorization: Bearer $FERRY_API_KEY' in out
    assert key not in out and key not in errors and "secret-value" not in out + errors
    assert "WARNING" not in errors  # 127.0.0.1 with a key: nothing to warn about


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
                                                ("localhost", True), ("0.0.0.0", False), ("::", False),
                                                ("192.168.1.10", False), ("myhost.example", False)])
def test_which_hosts_are_loopback(host, loopback):
    from ferry.commands.serve import is_loopback

    assert is_loopback(host) is loopback
