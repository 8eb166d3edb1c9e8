"""The maintenance loop on the local stack with tiny models, over real HTTP: labelled feedback -> update (train
from the live weights, build, gate, register) -> canary -> live; and every way it must refuse or recover.

One stack serves the module with the same tiny classifier under three names (Lambda's five layers: the runtime,
Powertools and three models); each model has its own feedback, registry entries and lock:

- ``broken``, before any feedback: no update (nothing trained, nothing registered); then a blessed version whose
  model answers 5xx: its canary's error alarm rolls it back;
- ``loop``: two ModelDegraded at once -> one update; the candidate serves a canary share of live traffic, then
  goes live (the layer in the layers folder, the registry, and the answers all say the new version); then a
  second update killed while its canary bakes: the registry says canary and the live version still serves
  (nothing half-promoted); a rerun skips the steps done and finishes it;
- ``noise``: feedback with shuffled labels -> the candidate is rejected by the gate, the live model untouched.
"""

from __future__ import annotations

import json
import random
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ferry.data.corpus import BINARY, load_corpus
from ferry.local.stack import LocalStack
from ferry.runtime import layout
from ferry.runtime.manifest import Manifest
from ferry.runtime.registry import Registry
from ferry.train import TrainConfig, train
from ferry.update import UpdateConfig
from ferry.update.local import Controller, LocalTarget, tables_of
from ferry.update.promotion import Promotions
from ferry.update.steps import DONE, REJECTED, SKIPPED, Trigger, Update

from helpers import ROOT, TINY_GATE, build_tiny_layer, http_api

SCENARIOS = ("broken", "loop", "noise")
# the tiny live model: trained like tests/pipeline/test_train.py's, without the Coachella topic
QUICK = {"steps": 40, "batch_size": 16, "max_length": 48, "max_train_texts": 600, "max_eval_texts": 200,
         "frozen_layers": 1, "train_eval_texts": 100, "max_validation_texts": 200, "validations": 2,
         "learning_rate": 3e-3, "warmup_steps": 5}
# The tiny models' gate: not worse on either slice. A tiny model retrained for 60 steps moves its feedback
# macro-F1 by several points either way (68 held-out rows), so it may drop 0.10 unless significantly worse; the
# project's gate (gate.json) asks the real model for a significant gain.
GATE = {
    "min_rows": 40, "draws": 500,
    "checks": [
        {"slice": "feedback", "metric": "macro_f1", "direction": "not_worse", "max_drop": 0.10},
        {"slice": "reference", "metric": "macro_f1", "direction": "not_worse", "max_drop": 0.05},
        {"slice": "reference", "metric": "accuracy", "min_value": 0.6},
    ],
}


@dataclass
class World:
    stack: LocalStack
    url: str
    layers: Path
    config: UpdateConfig
    tweets: list[tuple[str, str]]

    def update(self, model: str) -> Update:
        return Update(model, tables_of(self.stack), LocalTarget(self.stack), self.config)

    def registry(self) -> Registry:
        return Registry(tables_of(self.stack).registry)

    def deployed(self, model: str) -> str:
        return Manifest.load(layout.model_dir_in_layer(layout.layer_dir(self.layers, model), model)).version


def post(url: str, path: str, body: Any) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read() or b"null")


def versions_answering(url: str, model: str, count: int) -> list[str]:
    seen = []
    for _ in range(count):
        status, headers, _ = post(url, f"/v1/models/{model}/predict", {"inputs": "a quick question"})
        assert status == 200
        seen.append(headers["x-ferry-prediction-ids"].split(".")[2])
    return seen


def label(world: World, model: str, rows: list[tuple[str, str]]) -> None:
    """Predict each text through the API, then send its label with its text (the stack captures no text)."""
    for start in range(0, len(rows), 16):
        chunk = rows[start:start + 16]
        status, headers, _ = post(world.url, f"/v1/models/{model}/predict", {"inputs": [t for t, _ in chunk]})
        assert status == 200
        ids = headers["x-ferry-prediction-ids"].split(",")
        items = [{"prediction_id": i, "label": y, "text": t} for i, (t, y) in zip(ids, chunk, strict=True)]
        status, _, answer = post(world.url, "/v1/feedback", items)
        assert status == 202, answer


class Traffic:
    """Predictions in the background, as users would keep sending them while a canary bakes."""

    def __init__(self, url: str, model: str):
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, model), daemon=True)

    def _run(self, url: str, model: str) -> None:
        while not self._stop.is_set():
            self.statuses.append(post(url, f"/v1/models/{model}/predict", {"inputs": "keep it coming"})[0])
            time.sleep(0.02)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def world(tiny_bert, eval_csv, tmp_path_factory) -> Iterator[World]:
    work = tmp_path_factory.mktemp("loop")
    live = work / "live-model"
    train(TrainConfig(base=str(tiny_bert), data="default", out=live, exclude_topics=("coachella",), **QUICK))
    layers = work / "layers"
    for name in SCENARIOS:
        build_tiny_layer(live, layers, name, eval_csv)
    corpus = load_corpus(labels=BINARY)  # feedback: tweets of every topic (the tiny model cannot learn a new one)
    tweets = [(e.text, str(e.label)) for e in corpus.examples[1::2]]
    random.Random(0).shuffle(tweets)
    gate = work / "gate.json"
    gate.write_text(json.dumps(GATE))
    # The latency and estimate alarms judge only from 20 canary requests on (the product's default): over 5, a p95
    # is the slowest request, and one stall of a busy 2-core machine (a CI run, a benchmark beside it) rolled back
    # a healthy canary. The alarm these tests need is the error alarm, which counts failures, not a percentile.
    config = UpdateConfig(min_labels=150, min_per_label=20, steps=60, learning_rate=1e-3, warmup_steps=5,
                          gate=gate, canary_weight=0.3, canary_seconds=4.0, canary_min_requests=20, poll_seconds=0.5,
                          lease_seconds=60.0, work=work / "updates", store=work / "registry", parity=TINY_GATE)
    stack = LocalStack(root=ROOT, layers_dir=layers, echo=None).start()
    try:
        with http_api(stack) as url:
            yield World(stack, url, layers, config, tweets[:400])
    finally:
        stack.stop()


def test_without_feedback_nothing_is_trained_or_registered(world):
    before = world.deployed("broken")
    outcome = world.update("broken").run(Trigger(by="test"))
    assert outcome.state == SKIPPED and "no labelled feedback" in outcome.why
    assert [entry.status for entry in world.registry().versions("broken")] == ["live"]  # adopted, nothing else
    assert not any((world.config.work / "broken").rglob("model"))
    assert world.deployed("broken") == before


def test_two_degradations_at_once_make_one_update_that_goes_live_through_a_canary(world):
    before = world.deployed("loop")
    label(world, "loop", world.tweets[:300])
    controller = Controller(world.stack, world.config)  # not started: events handed to it as the bus would
    events = [{"id": f"degraded-{i}", "detail-type": "ModelDegraded", "source": "ferry.monitor",
               "detail": {"model": "loop", "version": before}} for i in range(2)]
    with Traffic(world.url, "loop") as traffic:
        first = controller.dispatch(events[0])
        second = controller.dispatch(events[1])
        assert first is not None and second is None  # the second is recorded, not started
        canary_seen = []
        while first.is_alive():
            state = world.stack.canary(LocalTarget(world.stack).function)
            if state is not None:
                canary_seen.append(state.weight)
            time.sleep(0.2)
    registry = world.registry()
    outcomes = {event.event_id: event.outcome for event in registry.events("loop")}
    assert outcomes == {"degraded-0": "started", "degraded-1": "skipped"}
    assert len(registry.updates("loop")) == 1
    statuses = {entry.version: entry.status for entry in registry.versions("loop")}
    new = next(version for version, status in statuses.items() if status == "live")
    assert new != before and statuses[before] == "retired"
    assert canary_seen and set(canary_seen) == {0.3}  # a share of the traffic first
    assert set(traffic.statuses) == {200}  # nothing failed while versions changed
    assert world.deployed("loop") == new
    assert set(versions_answering(world.url, "loop", 10)) == {new}
    entry = registry.get("loop", new)
    assert entry.gate["passed"] is True and entry.training["base"].endswith(f"loop/{before}/model")
    history = [(change["from"], change["to"]) for change in entry.history]
    assert history == [("", "candidate"), ("candidate", "blessed"), ("blessed", "canary"), ("canary", "live")]


def test_a_candidate_trained_on_shuffled_labels_is_rejected_and_the_live_model_untouched(world):
    before = world.deployed("noise")
    rows = world.tweets[:300]
    shuffled = [label for _, label in rows]
    random.Random(3).shuffle(shuffled)
    label(world, "noise", [(text, wrong) for (text, _), wrong in zip(rows, shuffled, strict=True)])
    update = world.update("noise")
    # learning the noise, as a pipeline that shuffled its labels would: most of each batch, for long enough
    update.config = UpdateConfig(**{**vars(world.config), "steps": 150, "learning_rate": 3e-3, "feedback_share": 0.8})
    outcome = update.run(Trigger(by="test"))
    assert outcome.state == REJECTED, outcome.why
    registry = world.registry()
    candidate = registry.get("noise", outcome.version)
    assert candidate.status == "rejected" and candidate.gate["passed"] is False
    assert "FAIL" in candidate.gate["summary"]
    assert registry.live("noise").version == before == world.deployed("noise")
    assert set(versions_answering(world.url, "noise", 5)) == {before}
    assert world.stack.canary(LocalTarget(world.stack).function) is None


def test_a_canary_whose_errors_fire_the_alarm_is_rolled_back(world, tmp_path):
    before = world.deployed("broken")
    update = world.update("broken")
    live = update._live()
    broken = tmp_path / "broken"
    shutil.copytree(layout.layer_dir(world.layers, "broken"), broken)
    model_dir = layout.model_dir_in_layer(broken, "broken")
    manifest = Manifest.load(model_dir).to_dict()
    manifest["version"] = "badbadbadbad"  # another version of the model; its weights no longer match the manifest
    (model_dir / "manifest.json").write_text(json.dumps(manifest))
    layout.model_file(model_dir).write_bytes(layout.model_file(model_dir).read_bytes()[:-64] + b"\0" * 64)
    registry = world.registry()
    registry.register(manifest, {"layer": broken.resolve().as_uri()}, by="test", why="a bad build")
    registry.record_gate("broken", "badbadbadbad", {"summary": "PASS (test)"}, passed=True, by="test")
    with Traffic(world.url, "broken") as traffic:
        result = Promotions(update).promote("badbadbadbad", by="test", why="try it")
    assert result["stop"] == "rolled-back" and "error alarm" in result["why"]
    assert 500 <= max(traffic.statuses) < 600  # the canary did answer errors
    assert registry.get("broken", "badbadbadbad").status == "rolled-back"
    assert registry.live("broken").version == live.version == before == world.deployed("broken")
    assert world.stack.canary(LocalTarget(world.stack).function) is None
    assert set(versions_answering(world.url, "broken", 5)) == {before}


class Killed(BaseException):
    """What a kill is to the update: not an error it records, an end it never sees."""


def test_an_update_killed_while_its_canary_bakes_is_consistent_and_a_rerun_finishes_it(world, monkeypatch):
    before = world.deployed("loop")
    label(world, "loop", world.tweets[300:400])
    trained = []
    import ferry.train as train_module

    real_train = train_module.train
    monkeypatch.setattr(train_module, "train", lambda *a, **k: trained.append(1) or real_train(*a, **k))

    def killed(self, entry):
        raise Killed()

    with monkeypatch.context() as patch:
        patch.setattr(Promotions, "bake", killed)
        with pytest.raises(Killed):
            world.update("loop").run(Trigger(by="test"))
    registry = world.registry()
    candidate = registry.canary("loop")
    assert candidate is not None and registry.live("loop").version == before  # canary, not live
    assert world.deployed("loop") == before  # what the layers folder deploys is untouched
    assert registry.running_update("loop") is not None
    with Traffic(world.url, "loop"):
        outcome = world.update("loop").run(Trigger(by="test, again"))
    assert outcome.state == DONE and outcome.version == candidate.version, outcome.why
    assert trained == [1]  # the rerun trained nothing again
    assert registry.live("loop").version == candidate.version == world.deployed("loop")
    assert registry.running_update("loop") is None
