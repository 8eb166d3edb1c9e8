"""A canary of the predict function on the local stack, over real HTTP: the gateway splits the route's traffic
between two versions of the function by the canary's weight, as CodeDeploy shifts the alias `live` in AWS; a
rollback, a promotion and a reload of the model layers change versions without failing a request; the traffic
counts say what each version answered; stopping the stack ends every version's processes.

One stack serves the whole module; each test leaves it with no canary, unless it is the last (which stops it).
Which version answered a request is read from its prediction ids (``p1.<model>.<version>...``)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from ferry.local.exceptions import LayersNotFoundError
from ferry.local.gateway import api_event
from ferry.local.stack import CANARY, PRIMARY, LocalStack
from ferry.runtime.ids import PREDICTION_ID_PATTERN

from helpers import ROOT, build_tiny_layer, http_api, workers_of_this_process

MODEL = "tiny-bert"
PREDICT = "PredictFunction"
PATH = f"/v1/models/{MODEL}/predict"
SEED = 20240611  # the stack's traffic seed: the split is the same from run to run
Z_999 = 3.2905  # two-sided 99.9% quantile of the normal distribution


@dataclass(frozen=True)
class Versions:
    layers_dir: Path  # the stack's layers: the first version of the model
    first: Path  # a layer folder of the first version (the stack's own may be swapped on disk)
    second: Path  # a layer folder of the second version (another seed: another model.onnx)
    broken: Path  # the first version with model.onnx altered: its manifest's sha256 no longer matches
    v1: str
    v2: str


def retrained(model_dir: Path, out: Path) -> Path:
    """The tiny model as a later training run might leave it: its classifier's bias moved a little (another
    model.onnx, so another version, with much the same predictions; a real retraining costs a minute here)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    shutil.copytree(model_dir, out)
    model = AutoModelForSequenceClassification.from_pretrained(out)
    with torch.no_grad():
        model.classifier.bias += torch.tensor([0.05, -0.05])
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def versions(tiny_bert, bert_build, eval_csv, tmp_path_factory) -> Versions:
    root = tmp_path_factory.mktemp("canary")
    layers_dir = root / "layers"
    shutil.copytree(bert_build.layer_dir, layers_dir / MODEL)
    second = build_tiny_layer(retrained(tiny_bert, root / "tiny-bert-2"), root / "second", MODEL, eval_csv)
    broken = root / "broken" / MODEL
    shutil.copytree(bert_build.layer_dir, broken)
    onnx = broken / "models" / MODEL / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, another sha256
    onnx.write_bytes(bytes(data))
    assert second.version != bert_build.version
    return Versions(layers_dir, bert_build.layer_dir, second.layer_dir, broken, bert_build.version, second.version)


@pytest.fixture(scope="module")
def api(versions):
    stack = LocalStack(root=ROOT, layers_dir=versions.layers_dir, echo=None, traffic_seed=SEED)
    try:
        stack.start()
        with http_api(stack) as url:
            yield stack, url
    finally:
        stack.stop()


def predict(url: str, text: str = "what a lovely day") -> tuple[int, str | None]:
    """The status of a prediction over HTTP, and the model version that answered (None for an error)."""
    request = urllib.request.Request(url + PATH, data=json.dumps({"inputs": text}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, version_of(response.headers["x-ferry-prediction-ids"])
    except urllib.error.HTTPError as error:
        error.read()
        return error.code, None


def version_of(prediction_ids: str) -> str:
    found = re.fullmatch(PREDICTION_ID_PATTERN, prediction_ids.split(",")[0])
    assert found, prediction_ids
    return found.group(2)


def answers(url: str, count: int) -> Counter[tuple[int, str | None]]:
    return Counter(predict(url, f"text number {number}") for number in range(count))


def gone(pids: list[int]) -> bool:
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        return False
    return True


def binomial_interval(n: int, p: float) -> tuple[float, float]:
    spread = Z_999 * math.sqrt(n * p * (1 - p))
    return n * p - spread, n * p + spread


def test_a_canary_answers_its_weight_of_the_requests_with_its_model_version(api, versions):
    stack, url = api
    for weight in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match="weight"):
            stack.set_canary(PREDICT, {MODEL: versions.second}, weight)
    with pytest.raises(LayersNotFoundError):
        stack.set_canary(PREDICT, {"sentiment": versions.second}, 0.3)  # that layer holds tiny-bert only
    assert stack.canary(PREDICT) is None

    started = time.time()
    stack.set_canary(PREDICT, {MODEL: versions.second}, 0.3)
    state = stack.canary(PREDICT)
    assert (dict(state.layers), state.weight, state.version) == ({MODEL: versions.second.resolve()}, 0.3, "2")
    assert started <= state.started_at <= time.time()
    canary, primary = stack.canary_function(PREDICT), stack.functions[PREDICT]
    # the same function and variables, the model served from the canary's layer instead of the stack's
    assert canary.variables["FERRY_MODELS_DIR"] == str((versions.second / "models").resolve())
    assert primary.variables["FERRY_MODELS_DIR"] == str((versions.layers_dir / MODEL / "models").resolve())
    assert ({k: v for k, v in canary.variables.items() if k != "FERRY_MODELS_DIR"}
            == {k: v for k, v in primary.variables.items() if k != "FERRY_MODELS_DIR"})
    assert (canary.environment["AWS_LAMBDA_FUNCTION_VERSION"], primary.environment["AWS_LAMBDA_FUNCTION_VERSION"]) \
        == ("2", "$LATEST")

    requests = 200
    seen = answers(url, requests)
    assert sum(seen.values()) == requests and set(seen) <= {(200, versions.v1), (200, versions.v2)}
    low, high = binomial_interval(requests, 0.3)
    assert low <= seen[200, versions.v2] <= high, seen
    traffic = stack.traffic(PREDICT)
    assert (traffic[PRIMARY].requests, traffic[CANARY].requests) == (seen[200, versions.v1], seen[200, versions.v2])
    for side in (PRIMARY, CANARY):
        assert (traffic[side].errors_5xx, traffic[side].errors_4xx) == (0, 0)
        assert len(traffic[side].latencies_ms) == traffic[side].requests
        assert 0 < traffic[side].p50_ms <= traffic[side].p95_ms
    # each side answers with its own model version
    event = api_event("POST", PATH, {"content-type": "application/json"}, b'{"inputs": "hello"}',
                      f"POST {PATH}", {"model": MODEL}, "127.0.0.1")
    by_side = {(side, version_of(result["headers"]["x-ferry-prediction-ids"]))
               for result, side in (stack.invoke_route(PREDICT, event) for _ in range(30))}
    assert by_side == {(PRIMARY, versions.v1), (CANARY, versions.v2)}
    # a direct invocation (a schedule's, an S3 event's) goes to the primary and is not routed traffic
    for _ in range(5):
        assert version_of(stack.invoke(PREDICT, event)["headers"]["x-ferry-prediction-ids"]) == versions.v1
    assert sum(stats.requests for stats in stack.traffic(PREDICT).values()) == requests + 30

    canary_pids = canary.pids
    stack.clear_canary(PREDICT)
    assert stack.canary(PREDICT) is None and stack.canary_function(PREDICT) is None
    assert gone(canary_pids)
    assert answers(url, 30) == {(200, versions.v1): 30}
    assert (stack.traffic(PREDICT)[PRIMARY].requests, stack.traffic(PREDICT)[CANARY].requests) == (30, 0)
    stack.clear_canary(PREDICT)  # nothing to roll back: nothing happens


def test_a_canary_that_answers_5xx_is_counted_on_its_side_only(api, versions):
    stack, url = api
    stack.set_canary(PREDICT, {MODEL: versions.broken}, 0.5)
    seen = answers(url, 40)
    assert set(seen) == {(200, versions.v1), (503, None)}  # the runtime refuses a model that fails its sha256
    traffic = stack.traffic(PREDICT)
    assert (traffic[CANARY].requests, traffic[CANARY].errors_5xx) == (seen[503, None], seen[503, None])
    assert (traffic[PRIMARY].requests, traffic[PRIMARY].errors_5xx) == (seen[200, versions.v1], 0)
    assert traffic[CANARY].error_rate == 1.0 and traffic[PRIMARY].error_rate == 0.0
    stack.clear_canary(PREDICT)
    assert answers(url, 10) == {(200, versions.v1): 10}


def test_weights_change_and_a_promoted_canary_answers_everything(api, versions):
    stack, url = api
    stack.set_canary(PREDICT, {MODEL: versions.broken}, 0.2)
    replaced = stack.canary_function(PREDICT)
    number = int(stack.canary(PREDICT).version)  # canaries are numbered as Lambda publishes versions
    stack.set_canary(PREDICT, {MODEL: versions.second}, 0.2)  # replaces the first canary
    assert stack.canary(PREDICT).version == str(number + 1) and replaced.pids == []
    stack.set_weight(PREDICT, 1.0)
    assert answers(url, 10) == {(200, versions.v2): 10}
    stack.set_weight(PREDICT, 0.0)
    assert answers(url, 10) == {(200, versions.v1): 10}
    with pytest.raises(ValueError, match="weight"):
        stack.set_weight(PREDICT, 1.01)

    old_pids = stack.functions[PREDICT].pids
    stack.promote_canary(PREDICT)
    assert stack.canary(PREDICT) is None and gone(old_pids)
    assert stack.functions[PREDICT].environment["AWS_LAMBDA_FUNCTION_VERSION"] == str(number + 1)
    assert answers(url, 20) == {(200, versions.v2): 20}
    assert stack.traffic(PREDICT)[PRIMARY].requests == 20
    with pytest.raises(ValueError, match="no canary"):
        stack.promote_canary(PREDICT)
    with pytest.raises(ValueError, match="no canary"):
        stack.set_weight(PREDICT, 0.5)

    stack.reload([PREDICT], layers={MODEL: versions.layers_dir / MODEL})  # back to the stack's layer
    assert answers(url, 10) == {(200, versions.v1): 10}


def test_a_reload_serves_a_layer_swapped_on_disk_without_failing_a_request(api, versions):
    stack, url = api
    layer = versions.layers_dir / MODEL
    staged = versions.layers_dir / f".{MODEL}.new"
    shutil.copytree(versions.second, staged)
    shutil.rmtree(layer)
    staged.rename(layer)
    assert predict(url) == (200, versions.v1)  # the warm worker keeps the model it loaded

    seen: list[tuple[int, str | None]] = []
    done = threading.Event()

    def keep_asking() -> None:
        while not done.is_set():
            seen.append(predict(url))

    asking = threading.Thread(target=keep_asking)
    asking.start()
    try:
        time.sleep(0.3)
        old_pids = {name: function.pids for name, function in stack.functions.items()}
        stack.reload()  # every function that reads models
        time.sleep(0.3)
    finally:
        done.set()
        asking.join(timeout=30)
    assert all(gone(pids) for pids in old_pids.values())
    assert len(seen) > 10 and {status for status, _ in seen} == {200}, Counter(seen)
    assert seen[0][1] == versions.v1 and seen[-1][1] == versions.v2
    assert answers(url, 10) == {(200, versions.v2): 10}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_stopping_the_stack_stops_its_canary_too(api, versions):
    stack, url = api  # the module's last test: it stops the module's stack
    stack.set_canary(PREDICT, {MODEL: versions.first}, 0.5)
    assert {status for status, _ in answers(url, 10)} == {200}
    pids = {pid for function in stack.functions.values() for pid in function.pids}
    pids |= set(stack.canary_function(PREDICT).pids)
    assert len(pids) == len(stack.functions) + 1 and pids <= set(workers_of_this_process())
    stack.stop()
    assert gone(sorted(pids)) and not set(workers_of_this_process()) & pids
    assert predict(url)[0] == 500  # the gateway still answers, as API Gateway would with its functions gone
