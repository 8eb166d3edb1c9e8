"""A daily quota end to end over real HTTP: predictions with a key are captured, the capture function counts them
for the key, the authorizer reads the count, and the next request is answered 429 with Retry-After, as in AWS
(the local gateway asks the authorizer on every request: no cache)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from ferry.local.gateway import Gateway
from ferry.local.stack import LocalStack
from ferry.runtime import aws
from ferry.runtime.keys import new_key, store_key, usage_of, utc_day

from conftest import ROOT

QUOTA = 3


@pytest.fixture(scope="module")
def api(serving_layers):
    with LocalStack(root=ROOT, layers_dir=serving_layers) as stack:
        keys = aws.table(stack.table_names["KeysTable"])
        key = new_key()
        identifier = store_key(keys, key, "quota-test", quota=QUOTA)
        gateway = Gateway(stack, "127.0.0.1", 0)
        gateway.authorize = True  # as `ferry serve --api-key`, with a key of our own that has a quota
        gateway.serve_in_background()
        try:
            yield stack, gateway.url, key, identifier
        finally:
            gateway.shutdown()
            gateway.server_close()


def predict(url: str, key: str | None, texts: list[str]) -> tuple[int, dict[str, str], object]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(f"{url}/v1/models/tiny-bert/predict", data=json.dumps({"inputs": texts}).encode(),
                                     headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def test_a_key_past_its_daily_quota_gets_429_with_retry_after(api):
    stack, url, key, identifier = api
    assert predict(url, None, ["no key"])[0] == 401
    status, _, body = predict(url, key, ["a lovely day", "what a mess"])
    assert status == 200 and len(body) == 2
    status, _, _ = predict(url, key, ["one more"])  # 3 predictions: the quota, not past it yet when asked
    assert status == 200
    usage = aws.table(stack.table_names["UsageTable"])
    deadline = time.monotonic() + 20
    while usage_of(usage, identifier, utc_day(time.time())) < QUOTA and time.monotonic() < deadline:
        time.sleep(0.1)  # captures reach the capture function through the log subscription, asynchronously
    assert usage_of(usage, identifier, utc_day(time.time())) == QUOTA
    status, headers, body = predict(url, key, ["over the quota"])
    assert status == 429
    assert body["error"]["code"] == "quota_exceeded"
    retry_after = int(headers["Retry-After"])
    assert 0 < retry_after <= 86_400
    assert usage_of(usage, identifier, utc_day(time.time())) == QUOTA  # a refused request predicts and counts nothing
