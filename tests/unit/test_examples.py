"""The examples an update learns from: each label with its text (the label's own, else the capture's), labels
without either counted and left out, read by model version and time from the tables as template.yaml makes them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ferry.runtime.examples import labelled_examples, read_examples_file, write_examples
from ferry.runtime.feedback import FeedbackService
from ferry.runtime.ids import PredictionIds
from ferry.runtime.manifest import FileEntry, Manifest

from helpers import template_tables

IDS = PredictionIds("a stack secret that is long enough")
NOW = 1_800_000_000.0


@pytest.fixture()
def tables(monkeypatch) -> Iterator[dict[str, Any]]:
    with template_tables(monkeypatch, "FeedbackTable", "CaptureTable") as made:
        yield made


def manifest(name: str) -> Manifest:
    return Manifest(name=name, version="aaaaaaaaaaaa", task="text-classification", labels=("negative", "positive"),
                    files={"model.onnx": FileEntry("0" * 64, 1), "tokenizer.json": FileEntry("0" * 64, 1)},
                    max_length=64)


def label(tables: dict[str, Any], prediction_id: str, value: str, *, text: str | None = None, at: float = NOW) -> None:
    service = FeedbackService(lambda: tables["FeedbackTable"], IDS, manifest, ttl_days=90, clock=lambda: at)
    body = {"prediction_id": prediction_id, "label": value, **({"text": text} if text else {})}
    answer = service.respond(body, key_id=None)
    assert answer.status == 202, answer.body


def test_each_label_takes_its_own_text_else_the_captures_and_without_either_is_counted(tables):
    own, captured, bare = (IDS.issue("sentiment", "aaaaaaaaaaaa") for _ in range(3))
    tables["CaptureTable"].put_item(Item={"prediction_id": captured, "text": "captured text", "epoch_ms": 1,
                                          "model_version": "sentiment#aaaaaaaaaaaa"})
    tables["CaptureTable"].put_item(Item={"prediction_id": bare, "epoch_ms": 2,
                                          "model_version": "sentiment#aaaaaaaaaaaa"})  # CaptureText off
    label(tables, own, "positive", text="sent with the label", at=NOW)
    label(tables, captured, "negative", at=NOW + 1)
    label(tables, bare, "negative", at=NOW + 2)
    found = labelled_examples(tables["FeedbackTable"], tables["CaptureTable"], "sentiment", ["aaaaaaaaaaaa"])
    assert [(e.text, e.label) for e in found.examples] == [("sent with the label", "positive"),
                                                           ("captured text", "negative")]
    assert (found.labels_read, found.without_text) == (3, 1)
    assert found.summary()["by_label"] == {"positive": 1, "negative": 1}


def test_only_the_versions_asked_and_the_labels_after_since_are_read(tables):
    old, new, other = IDS.issue("sentiment", "aaaaaaaaaaaa"), IDS.issue("sentiment", "bbbbbbbbbbbb"), \
        IDS.issue("sentiment", "cccccccccccc")
    label(tables, old, "positive", text="old", at=NOW)
    label(tables, new, "positive", text="new", at=NOW + 10)
    label(tables, other, "negative", text="other", at=NOW + 20)
    found = labelled_examples(tables["FeedbackTable"], tables["CaptureTable"], "sentiment",
                              ["aaaaaaaaaaaa", "bbbbbbbbbbbb"])
    assert [e.text for e in found.examples] == ["old", "new"]
    since = labelled_examples(tables["FeedbackTable"], tables["CaptureTable"], "sentiment",
                              ["aaaaaaaaaaaa", "bbbbbbbbbbbb"], since_ms=int((NOW + 5) * 1000))
    assert [e.text for e in since.examples] == ["new"]


def test_examples_are_written_whole_and_read_back(tables, tmp_path):
    ids = [IDS.issue("sentiment", "aaaaaaaaaaaa") for _ in range(3)]
    for i, prediction_id in enumerate(ids):
        label(tables, prediction_id, "negative", text=f"texte n°{i} \u2014 ok", at=NOW + i)
    found = labelled_examples(tables["FeedbackTable"], tables["CaptureTable"], "sentiment", ["aaaaaaaaaaaa"])
    path = write_examples(found.examples, tmp_path / "u" / "examples.jsonl")
    assert read_examples_file(path) == found.examples
    assert [p.name for p in path.parent.iterdir()] == ["examples.jsonl"]  # no temporary left behind


def test_a_labels_file_may_carry_each_text_in_a_text_column():
    from ferry.runtime.feedback import read_label_file

    body = b'prediction_id,label,text\np1,positive,"a text, with a comma"\np2,negative,\n'
    rows = [(line, row if isinstance(row, Exception) else row.model_dump(exclude_none=True))
            for line, row in read_label_file(body, "labels/x.csv")]
    assert rows == [(2, {"prediction_id": "p1", "label": "positive", "correct": False, "sampled": False,
                         "text": "a text, with a comma"}),
                    (3, {"prediction_id": "p2", "label": "negative", "correct": False, "sampled": False})]
