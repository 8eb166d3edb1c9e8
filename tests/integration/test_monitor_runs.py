"""The monitor's runs over the real drift scenario's recorded outputs (tests/fixtures/drift_scenario.json.gz), on
moto's in-process DynamoDB and EventBridge: windows tested once, one ModelDegraded per episode, labels joined with
captures that land late, nothing for a model without traffic, state written on a condition."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ferry.local import template as tpl
from ferry.runtime import stats
from ferry.runtime.manifest import Bins, FileEntry, Manifest, ReferenceDistributions, ReferenceSample
from ferry.runtime.monitor import (
    DEGRADED,
    RECOVERED,
    Monitor,
    MonitorConfig,
    Sources,
    complete_windows,
    emf_documents,
    history,
    weighted_percentiles,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "drift_scenario.json.gz"
START_MS = 1_800_000_000_000
SHA = "0" * 64


@pytest.fixture(scope="module")
def scenario() -> dict[str, Any]:
    with gzip.open(FIXTURE, "rt", encoding="utf-8") as handle:
        return json.load(handle)


def manifest_of(scenario: dict[str, Any], version: str = "aaaaaaaaaaaa") -> Manifest:
    reference = scenario["reference"]
    fitted = stats.Calibration.fit(np.asarray(reference["confidence"]), np.asarray(reference["correct"]))
    sample = ReferenceSample(source="validation", token_length=tuple(reference["token_length"]),
                             confidence=tuple(reference["confidence"]), predicted=tuple(reference["predicted"]),
                             correct=tuple(reference["correct"]),
                             accuracy=float(np.mean(reference["correct"])))
    return Manifest(name="sentiment", version=version, task="text-classification", max_length=64,
                    files={"model.onnx": FileEntry(SHA, 1), "tokenizer.json": FileEntry(SHA, 1)},
                    labels=tuple(scenario["labels"]),
                    reference=ReferenceDistributions(token_length=Bins((0.0, 1.0), (1,), 1), sample=sample,
                                                     calibration=fitted.to_dict()))


class Clock:
    def __init__(self) -> None:
        self.ms = START_MS

    def __call__(self) -> float:
        return self.ms / 1000


class World:
    """moto's tables and bus as the template declares them, a watched SQS target of ModelDegraded events, and a
    stream of captures and labels the tests feed."""

    def __init__(self, scenario: dict[str, Any]) -> None:
        import boto3

        template = tpl.load_template(ROOT / "template.yaml")
        dynamodb = boto3.resource("dynamodb", region_name="us-east-1")
        client = boto3.client("dynamodb", region_name="us-east-1")
        for logical_id in ("CaptureTable", "FeedbackTable", "MonitorStateTable"):
            client.create_table(**tpl.tables(template)[logical_id])
        self.captures = dynamodb.Table("CaptureTable")
        self.feedback = dynamodb.Table("FeedbackTable")
        self.state = dynamodb.Table("MonitorStateTable")
        sqs = boto3.client("sqs", region_name="us-east-1")
        self.queue = sqs.create_queue(QueueName="events")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=self.queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events = boto3.client("events", region_name="us-east-1")
        events.put_rule(Name="watch", EventPattern=json.dumps({"source": ["ferry.monitor"]}))
        events.put_targets(Rule="watch", Targets=[{"Id": "q", "Arn": arn}])
        self.sqs, self.events = sqs, events
        self.scenario = scenario
        self.clock = Clock()
        self.manifest = manifest_of(scenario)
        self.sent = 0
        self.writers: tuple[Any, Any] = (self.captures, self.feedback)

    def sources(self) -> Sources:
        return Sources(captures=self.captures, state=self.state, feedback=self.feedback, events=self.events,
                       bus="default")

    def monitor(self, **config: Any) -> Monitor:
        return Monitor({"sentiment": self.manifest}, self.sources(),
                       MonitorConfig(settle_seconds=0, **config), clock=self.clock)

    def predict(self, part: str, rows: list[int], *, label: bool = False, sampled: bool = True,
                capture: bool = True, version: str | None = None) -> list[str]:
        """Captures (and labels) for rows of a part of the scenario, 8 per request, one request a millisecond."""
        data, labels = self.scenario[part], self.scenario["labels"]
        version = version or self.manifest.version
        ids = []
        with self.captures.batch_writer() as captures, self.feedback.batch_writer() as feedback:
            self.writers = (captures, feedback)
            self._predict(data, labels, rows, label, sampled, capture, version, ids)
        self.writers = (self.captures, self.feedback)
        self.clock.ms += 1
        return ids

    def _predict(self, data: dict[str, Any], labels: list[str], rows: list[int], label: bool, sampled: bool,
                 capture: bool, version: str, ids: list[str]) -> None:
        for start in range(0, len(rows), 8):
            self.clock.ms += 1
            for row in rows[start:start + 8]:
                self.sent += 1
                prediction_id = f"p{self.sent:08d}"
                ids.append(prediction_id)
                predicted = labels[data["predicted"][row]]
                if capture:
                    self.land(prediction_id, predicted, data["confidence"][row], data["token_length"][row], version)
                if label:
                    truth = predicted if data["correct"][row] else next(x for x in labels if x != predicted)
                    self.writers[1].put_item(Item={
                        "prediction_id": prediction_id, "model": "sentiment", "version": version,
                        "model_version": f"sentiment#{version}", "label": truth, "epoch_ms": self.clock.ms,
                        "sampled": sampled})

    def land(self, prediction_id: str, label: str, confidence: float, token_length: int,
             version: str | None = None) -> None:
        version = version or self.manifest.version
        self.writers[0].put_item(Item={
            "prediction_id": prediction_id, "model": "sentiment", "version": version,
            "model_version": f"sentiment#{version}", "epoch_ms": self.clock.ms, "label": label,
            "score": Decimal(str(confidence)), "confidence": Decimal(str(confidence)),
            "token_length": token_length, "latency_ms": Decimal("4.5"), "batch_size": 8, "channel": "api"})

    def events_seen(self) -> list[dict[str, Any]]:
        seen = []
        while True:
            messages = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return seen
            for message in messages:
                seen.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, scenario: dict[str, Any]) -> Iterator[World]:
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield World(scenario)


def rows_of(world: World, part: str, count: int, seed: int) -> list[int]:
    size = len(world.scenario[part]["confidence"])
    return np.random.default_rng(seed).choice(size, count, replace=count > size).tolist()


def test_a_model_without_captures_gives_nothing_and_no_error(world: World) -> None:
    [health] = world.monitor().run()
    assert health.predictions == 0 and health.tests == [] and health.firings == [] and health.status == "idle"
    assert "no captures" in health.notes and world.events_seen() == []


def test_in_domain_traffic_is_tested_window_by_window_and_raises_nothing(world: World) -> None:
    world.predict("in_domain", rows_of(world, "in_domain", 608, 1), label=True)  # 76 requests of 8
    [first] = world.monitor().run()
    tested = {(t["test"], t["window"]["from_ms"]) for t in first.tests}
    assert {t["test"] for t in first.tests} == {"accuracy", "confidence_psi", "token_length_psi", "label_mix_js",
                                                "estimated_accuracy"}
    assert sum(t["test"] == "confidence_psi" for t in first.tests) == 2  # two windows of 304 (a request is whole)
    assert sum(t["test"] == "accuracy" for t in first.tests) == 4  # four windows of 152 labels
    assert first.firings == [] and world.events_seen() == [] and first.status == "healthy"
    assert first.labelled["labels"] == 608 and 0.85 < first.labelled["accuracy"] < 0.97
    assert first.labelled["accuracy_interval"][0] < first.labelled["accuracy"] < first.labelled["accuracy_interval"][1]
    assert set(first.labelled["recall"]) == set(world.scenario["labels"])
    assert 0.8 < first.estimated["accuracy"] < 1.0 and first.latency["p50_ms"] == 4.5
    [again] = world.monitor().run()  # nothing new: no window is tested twice
    assert again.tests == [] and not tested & {(t["test"], t["window"]["from_ms"]) for t in again.tests}


def test_the_shift_opens_one_episode_with_its_evidence_and_quiet_windows_close_it(world: World) -> None:
    world.predict("in_domain", rows_of(world, "in_domain", 300, 2), label=True)
    assert world.monitor().run()[0].firings == []
    world.predict("shifted", rows_of(world, "shifted", 600, 3), label=True)
    [degraded] = world.monitor().run()
    fired = {firing.test for firing in degraded.firings}
    assert "accuracy" in fired and "confidence_psi" in fired and degraded.event_sent == DEGRADED
    [event] = world.events_seen()
    assert event["detail-type"] == DEGRADED and event["source"] == "ferry.monitor"
    evidence = {item["test"]: item for item in event["detail"]["evidence"]}
    assert evidence["accuracy"]["statistic"] < evidence["accuracy"]["threshold"]
    assert evidence["accuracy"]["labels"] >= 150 and evidence["accuracy"]["p_value"] < 0.002
    assert evidence["confidence_psi"]["statistic"] > evidence["confidence_psi"]["threshold"]
    assert evidence["confidence_psi"]["window"]["rows"] >= 300
    world.predict("shifted", rows_of(world, "shifted", 300, 4), label=True)
    [still] = world.monitor().run()
    assert still.firings and still.event_sent is None and world.events_seen() == []  # one event per episode
    assert still.status == "degraded"
    world.predict("in_domain", rows_of(world, "in_domain", 900, 5), label=True)
    [recovered] = world.monitor().run()
    assert recovered.event_sent == RECOVERED and recovered.episode is None  # leftover shifted rows may fire first
    assert [event["detail-type"] for event in world.events_seen()] == [RECOVERED]
    runs = history(world.state, "sentiment")
    assert [run["status"] for run in runs] == ["healthy", "degraded", "degraded", "healthy"]


def test_a_label_that_arrives_before_its_capture_waits_for_it(world: World) -> None:
    ids = world.predict("in_domain", list(range(150)), label=True, capture=False)
    [waiting] = world.monitor().run()
    assert waiting.labelled["labels"] == 0 and waiting.labelled["pending"] == 150
    assert not any(t["test"] == "accuracy" for t in waiting.tests)
    data, labels = world.scenario["in_domain"], world.scenario["labels"]
    for row, prediction_id in enumerate(ids):
        world.land(prediction_id, labels[data["predicted"][row]], data["confidence"][row], data["token_length"][row])
    [joined] = world.monitor().run()
    assert joined.labelled["labels"] == 150 and [t["test"] for t in joined.tests] == ["accuracy"]


def test_without_labels_it_says_so_and_tests_only_what_needs_none(world: World) -> None:
    world.predict("in_domain", rows_of(world, "in_domain", 300, 6))
    [health] = world.monitor().run()
    assert health.labelled["labels"] == 0 and "no labels" in health.labelled["note"]
    assert {t["test"] for t in health.tests} == {"confidence_psi", "token_length_psi", "label_mix_js",
                                                 "estimated_accuracy"}


def test_voluntary_labels_give_way_to_an_audit_sample_when_a_window_has_enough(world: World) -> None:
    world.predict("in_domain", list(range(100)), label=True, sampled=True)
    world.predict("in_domain", list(range(100, 150)), label=True, sampled=False)
    [health] = world.monitor().run()
    [accuracy] = [t for t in health.tests if t["test"] == "accuracy"]
    assert accuracy["population"] == "audit sample" and accuracy["labels"] == 100
    assert health.labelled["population"] == "all feedback" and health.labelled["sampled"]["labels"] == 100


def test_a_new_version_closes_the_episode(world: World, scenario: dict[str, Any]) -> None:
    world.predict("shifted", rows_of(world, "shifted", 300, 7), label=True)
    assert world.monitor().run()[0].event_sent == DEGRADED
    world.events_seen()
    world.manifest = manifest_of(scenario, version="bbbbbbbbbbbb")
    [health] = world.monitor().run()
    assert health.episode is None and "went live" in health.notes[0]
    assert [event["detail-type"] for event in world.events_seen()] == [RECOVERED]


def test_of_two_runs_at_once_only_the_one_whose_state_was_saved_announces_the_episode(world: World) -> None:
    world.predict("shifted", rows_of(world, "shifted", 300, 8), label=True)
    first, second = world.monitor(), world.monitor()
    state = first._state("sentiment")  # both read the same revision...
    [won] = first.run()
    second._state = lambda model: dict(state)  # type: ignore[method-assign]
    [late] = second.run()  # ...both see the shift, and the second one's write is refused
    assert won.firings and late.firings
    assert won.event_sent == DEGRADED and late.event_sent is None
    assert any("another run saved first" in note for note in late.notes)
    assert [event["detail-type"] for event in world.events_seen()] == [DEGRADED]


def test_an_event_eventbridge_refused_is_sent_by_the_next_run(world: World) -> None:
    world.predict("shifted", rows_of(world, "shifted", 300, 10), label=True)
    monitor = world.monitor()
    put_events = world.events.put_events
    monitor.sources.events = type("Refusing", (), {"put_events": staticmethod(
        lambda **_: {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "ThrottlingException"}]})})()
    [refused] = monitor.run()
    assert refused.event_sent is None and any("not sent yet" in note for note in refused.notes)
    assert world.events_seen() == []
    monitor.sources.events = type("Working", (), {"put_events": staticmethod(put_events)})()
    [next_run] = monitor.run()
    assert next_run.event_sent == DEGRADED and next_run.firings == []  # nothing new fired: the outbox was sent
    assert [event["detail-type"] for event in world.events_seen()] == [DEGRADED]


def test_windows_end_on_a_request_boundary() -> None:
    items = [{"epoch_ms": ms} for ms in (1, 1, 2, 2, 2, 3, 4, 4)]
    assert [len(w) for w in complete_windows(items, 2)] == [2, 3, 3]
    assert [len(w) for w in complete_windows(items, 4)] == [5]  # ms 2 is not split; ms 3, 4 wait for more


def test_latency_percentiles_weigh_each_request_once() -> None:
    # one request of 9 texts at 100 ms, two of 1 text at 10 ms: per text the median is 100 ms, per request 10 ms
    assert weighted_percentiles([100.0] * 9 + [10.0] * 2, [1 / 9] * 9 + [1.0] * 2, (0.5,)) == [10.0]


def test_the_emf_document_publishes_by_model_and_version_and_counts_firings(world: World) -> None:
    world.predict("shifted", rows_of(world, "shifted", 300, 9), label=True)
    results = world.monitor().run()
    [document] = list(emf_documents(results))
    directive = document["_aws"]["CloudWatchMetrics"][0]
    assert directive["Dimensions"] == [["model", "version"], ["model"]]
    assert document["AccuracyDropDetected"] >= 1 and document["DriftDetected"] >= 1 and document["Degraded"] == 1
    assert {"Accuracy", "EstimatedAccuracy", "ConfidencePSI", "LatencyP95"} <= set(document)


def test_an_embedder_is_watched_by_its_token_lengths_and_its_vectors_norms(world: World) -> None:
    rng = np.random.default_rng(11)
    lengths, norms = rng.integers(5, 60, 600), rng.normal(6.0, 0.4, 600)
    sample = ReferenceSample(source="tweets", token_length=tuple(int(v) for v in lengths[:400]),
                             norm=tuple(round(float(v), 6) for v in norms[:400]))
    embedder = Manifest(name="minilm", version="cccccccccccc", task="feature-extraction", max_length=128,
                        files={"model.onnx": FileEntry(SHA, 1), "tokenizer.json": FileEntry(SHA, 1)},
                        reference=ReferenceDistributions(token_length=Bins((0.0, 1.0), (1,), 1), sample=sample))

    def embed(norm_values: np.ndarray, length_values: np.ndarray) -> None:
        with world.captures.batch_writer() as writer:
            for index, (norm, length) in enumerate(zip(norm_values, length_values, strict=True)):
                if index % 8 == 0:
                    world.clock.ms += 1
                writer.put_item(Item={"prediction_id": f"e{world.clock.ms}-{index}", "model": "minilm",
                                      "version": embedder.version, "model_version": f"minilm#{embedder.version}",
                                      "epoch_ms": world.clock.ms, "norm": Decimal(str(round(float(norm), 6))),
                                      "token_length": int(length), "latency_ms": Decimal("3"), "batch_size": 8})
        world.clock.ms += 1

    monitor = Monitor({"minilm": embedder}, world.sources(), MonitorConfig(settle_seconds=0), clock=world.clock)
    embed(norms[400:], lengths[400:])  # 200 more from the reference's distribution...
    embed(rng.normal(6.0, 0.4, 104), rng.integers(5, 60, 104))  # ...and 104: a window of 304
    [healthy] = monitor.run()
    assert {t["test"] for t in healthy.tests} == {"token_length_psi", "norm_psi"}
    assert healthy.firings == [] and healthy.labelled == {} and healthy.estimated == {}
    embed(rng.normal(7.5, 0.4, 304), rng.integers(5, 60, 304))  # the vectors grew: another kind of text
    [shifted] = monitor.run()
    assert [f.test for f in shifted.firings] == ["norm_psi"] and shifted.event_sent == DEGRADED
