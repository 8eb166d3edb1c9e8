"""The update's pieces that need no model: its settings, the candidate's training config drawn from the live
model's own, when it waits for labels, and the gate's slices (held out by the data's hash rule)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ferry.data.dataset import normalize_text, split_of
from ferry.runtime.examples import Example, ExampleSet, write_examples
from ferry.update import InvalidUpdateConfigError, UpdateConfig
from ferry.update.steps import _too_few, candidate_config, gate_slices

from helpers import template_tables


@pytest.mark.parametrize(("field", "value", "message"), [
    ("min_labels", 0, "min_labels must be positive"),
    ("canary_weight", 1.0, "canary_weight must be in (0, 1)"),
    ("canary_seconds", 0, "canary_seconds must be positive"),
    ("gate", Path("no/such/gate.json"), "no/such/gate.json: no such file"),
])
def test_bad_settings_are_refused_naming_the_field(field, value, message):
    with pytest.raises(InvalidUpdateConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        UpdateConfig(**{field: value})


def test_the_candidate_trains_like_the_live_model_from_its_weights_with_the_feedback(tmp_path):
    original = {"base": "sentence-transformers/all-MiniLM-L6-v2", "data": "default", "out": "build/x",
                "max_length": 48, "exclude_topics": ["coachella"], "fractions": [0.8, 0.1, 0.1], "steps": 600,
                "learning_rate": 1e-4, "max_eval_texts": 200, "max_minutes": 9, "seed": 7, "future_key": 1}
    feedback = tmp_path / "examples.jsonl"
    feedback.write_text("")
    config = candidate_config(original, base=tmp_path, out=tmp_path / "out", feedback=feedback,
                              config=UpdateConfig(steps=123, learning_rate=2e-5))
    assert (config.base, config.out, config.feedback_data) == (str(tmp_path), tmp_path / "out", str(feedback))
    assert (config.steps, config.learning_rate, config.select, config.seed) == (123, 2e-5, "last", 0)
    assert (config.max_length, config.exclude_topics, config.max_eval_texts) == (48, ("coachella",), 200)
    assert config.max_minutes is None  # the update's budget, not the original's


def example(text: str, label: str, at: int) -> Example:
    return Example(text=text, label=label, prediction_id=f"p{at}", version="v", epoch_ms=at)


def test_an_update_waits_for_enough_recent_labels_of_every_label():
    config = UpdateConfig(min_labels=4, min_per_label=2)
    rows = [example(f"t{i}", "positive", i) for i in range(5)]
    assert "no labelled feedback" in _too_few(ExampleSet("m"), [], ("negative", "positive"), config)
    found = ExampleSet("m", rows)
    assert "3 labelled examples since the trigger" in _too_few(found, rows[2:], ("negative", "positive"), config)
    assert "too few examples of negative 0" in _too_few(found, rows, ("negative", "positive"), config)
    found.examples += [example("n1", "negative", 9), example("n2", "negative", 10)]
    assert _too_few(found, found.examples, ("negative", "positive"), config) is None


def test_the_gate_slices_hold_out_by_the_hash_rule_and_prefer_the_recent_feedback(tmp_path):
    trained = tmp_path / "model"
    (trained / "predictions").mkdir(parents=True)
    (trained / "predictions" / "test.jsonl").write_text(
        "".join(json.dumps({"text": f"reference {i}", "label": "negative", "predicted": "negative"}) + "\n"
                for i in range(5)))
    texts = [f"feedback text number {i}" for i in range(400)]
    rows = [example(text, "positive", i) for i, text in enumerate(texts)]
    path = write_examples(rows, tmp_path / "examples.jsonl")
    held_out = {text for text in texts if split_of(normalize_text(text)) != "train"}
    slices = gate_slices(trained, path, since_ms=200, min_rows=10)
    assert [text for text, _ in slices["reference"][0]] == [f"reference {i}" for i in range(5)]
    recent = {text for text, _ in slices["feedback"][0]}
    assert recent and recent <= held_out and all(int(t.split()[-1]) >= 200 for t in recent)
    everything = gate_slices(trained, path, since_ms=200, min_rows=len(held_out))  # too few recent: all held out
    assert {text for text, _ in everything["feedback"][0]} == held_out
    assert "too few" in everything["feedback"][1]


@pytest.fixture()
def registry_tables(monkeypatch) -> Iterator[dict[str, Any]]:
    with template_tables(monkeypatch, "ModelRegistryTable", "FeedbackTable", "CaptureTable") as made:
        yield made


def test_two_triggers_at_once_in_one_process_run_one_update_and_record_the_other(registry_tables, monkeypatch,
                                                                                  tmp_path):
    import threading

    from ferry.runtime.registry import Registry
    from ferry.update.steps import Outcome, Tables, Trigger, Update

    tables = Tables(registry_tables["ModelRegistryTable"], registry_tables["FeedbackTable"],
                    registry_tables["CaptureTable"])
    inside, leave = threading.Event(), threading.Event()

    def slow_steps(self, update_id, trigger):
        self.registry.start_update(self.model, update_id, by=trigger.by)
        inside.set()
        leave.wait(10)
        return Outcome("done", update_id, "finished")

    monkeypatch.setattr(Update, "_steps", slow_steps)
    config = UpdateConfig(work=tmp_path / "work", store=tmp_path / "store")
    first_outcome = []
    first = threading.Thread(target=lambda: first_outcome.append(
        Update("m", tables, target=None, config=config).run(Trigger(by="one", event_id="e1"))))
    first.start()
    assert inside.wait(10)
    second = Update("m", tables, target=None, config=config).run(Trigger(by="two", event_id="e2"))
    leave.set()
    first.join(10)
    assert second.state == "skipped" and "an update is running" in second.why
    assert first_outcome[0].state == "done"
    events = {event.event_id: event.outcome for event in Registry(tables.registry).events("m")}
    assert events == {"e1": "started", "e2": "skipped"}
    assert [record.state for record in Registry(tables.registry).updates("m")] == ["done"]


def test_the_controller_waits_and_says_so_once_when_the_bus_cannot_be_read(caplog):
    """moto gone (the stack stopping, a SIGTERM to the process group): no traceback per poll, no busy loop."""
    import threading
    import time

    from ferry.update.local import Controller

    class Unreachable:
        calls = 0

        def drain(self, **_):
            Unreachable.calls += 1
            raise ConnectionError("connection refused")

    class Stack:
        def __init__(self):
            self.template = {"Resources": {"PredictFunction": {"Type": "AWS::Serverless::Function",
                                                               "Properties": {"AutoPublishAlias": "live"}}}}

    controller = Controller(Stack())
    controller._queue = Unreachable()  # what start() makes: the bus's queue, here one moto no longer answers
    thread = threading.Thread(target=controller._run, daemon=True)
    with caplog.at_level("WARNING", logger="ferry.update"):
        thread.start()
        time.sleep(2.5)
        controller._stopped.set()
        thread.join(5)
    assert not thread.is_alive()
    assert 2 <= Unreachable.calls <= 4  # once a second
    warnings = [record for record in caplog.records if "cannot read the bus" in record.getMessage()]
    assert len(warnings) == 1 and warnings[0].exc_info is None
