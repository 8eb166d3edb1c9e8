"""A daily quota end to end over real HTTP: predictions with a key are captured, the capture function counts them
for the key, the authorizer reads the count, and the next request is answered 429 with Retry-After, as in AWS
(the local gateway asks the authorizer on every request: no cache)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from ferry.local.stack import LocalStack
from ferry.runtime.capture import capture_line
from ferry.runtime.keys import new_key, store_key, usage_of, utc_day

from helpers import ROOT, http_api, wait_for

QUOTA = 3


@pytest.fixture(scope="module")
def api(serving_layers):
    with LocalStack(root=ROOT, layers_dir=serving_layers) as stack:
        keys = stack.resource("dynamodb").Table(stack.table_names["KeysTable"])
        key = new_key()
        identifier = store_key(keys, key, "quota-test", quota=QUOTA)
        with http_api(stack, authorize=True) as url:  # as `ferry serve --api-key`, with a key of our own (a quota)
            yield stack, url, key, identifier


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
    delivered = stack.delivered
    assert predict(url, None, ["no key"])[0] == 401
    status, _, body = predict(url, key, ["a lovely day", "what a mess"])
    assert status == 200 and len(body) == 2
    status, _, _ = predict(url, key, ["one more"])  # 3 predictions: the quota, not past it yet when asked
    assert status == 200
    usage = stack.resource("dynamodb").Table(stack.table_names["UsageTable"])
    # captures reach the capture function through the log subscription, asynchronously
    assert wait_for(lambda: (stack.delivered - delivered, usage_of(usage, identifier, utc_day(time.time()))),
                    lambda seen: seen == (QUOTA, QUOTA), timeout=20) == (QUOTA, QUOTA)
    status, headers, body = predict(url, key, ["over the quota"])
    assert status == 429
    assert body["error"]["code"] == "quota_exceeded"
    retry_after = int(headers["Retry-After"])
    assert 0 < retry_after <= 86_400
    # A refused request predicts and counts nothing. What it would count comes asynchronously, so a line filed after
    # its answer (a function's lines are filed before its invocation returns) goes through the same delivery: in
    # order, one burst at a time. Once that line is delivered, a capture of the refused request would be counted.
    marker = {"prediction_id": "e" * 32, "model": "tiny-bert", "version": "0" * 12, "time": "t",
              "epoch_ms": int(time.time() * 1000), "label": "positive", "score": 0.5}
    stack.logs.put((stack.functions["PredictFunction"].log_group, marker["epoch_ms"],
                    capture_line(marker, service="ferry-predict", request_id="marker")))
    captures = stack.resource("dynamodb").Table(stack.table_names["CaptureTable"])
    assert wait_for(lambda: stack.delivered - delivered, lambda lines: lines >= QUOTA + 1, timeout=20) == QUOTA + 1
    assert "Item" in captures.get_item(Key={"prediction_id": marker["prediction_id"]})
    assert usage_of(usage, identifier, utc_day(time.time())) == QUOTA
