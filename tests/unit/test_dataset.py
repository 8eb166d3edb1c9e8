from __future__ import annotations

import json

import pytest

from ferry.data import DataError
from ferry.data.dataset import build_dataset, load_dataset, merge_duplicates, normalize_text, split_of


def test_normalize_lowercases_drops_urls_and_collapses_spaces():
    assert normalize_text("  Great   NEWS http://t.co/abc  www.x.com/y ") == "great news"


def test_duplicates_merge_by_majority_and_ties_are_dropped_and_counted():
    rows = [
        ("Love it http://a", "positive", 0.9), ("love it http://b", "positive", None), ("LOVE IT", "negative", 1.0),
        ("meh", "positive", None), ("Meh", "negative", None),
        ("fine", "positive", 0.7),
    ]
    merged, stats = merge_duplicates(rows)
    assert [(n, m.text, m.label, m.confidence, m.copies) for n, m in merged] == [
        ("love it", "Love it http://a", "positive", 0.9, 3),
        ("fine", "fine", "positive", 0.7, 1),
    ]
    assert stats == {"rows": 6, "texts": 3, "duplicate_rows": 3, "conflicting_groups": 2, "ties_dropped": 1,
                     "rows_dropped": 2}


# Splits computed once and written here: a split must never change between runs, processes, machines or
# versions (a model's test figures would silently mix in texts it trained on). Python's own hash() is salted
# per process, so any split derived from it fails these.
SPLIT_OF = {"text number 0": "train", "text number 1": "test", "text number 2": "train",
            "text number 10": "validation", "text number 22": "test", "some text": "train", "": "validation",
            "g": "validation", "i": "validation", "k": "train"}
SPLIT_OF_THIRDS = {"text number 0": "validation", "text number 1": "test", "text number 3": "train",
                   "text number 5": "test", "text number 7": "train"}


def test_split_of_is_a_fixed_function_of_the_text():
    assert {text: split_of(text) for text in SPLIT_OF} == SPLIT_OF
    assert {text: split_of(text, (0.34, 0.33, 0.33)) for text in SPLIT_OF_THIRDS} == SPLIT_OF_THIRDS


def test_splits_follow_the_normalised_text_and_their_fractions():
    texts = [f"text number {i}" for i in range(4000)]
    dataset = build_dataset([(t, "a" if i % 2 else "b", None) for i, t in enumerate(texts)], ("a", "b"), "x")
    sizes = {name: len(rows) for name, rows in dataset.splits.items()}
    assert sizes == {"train": 3221, "validation": 382, "test": 397}  # about 80/10/10, exactly these
    # a near-copy normalises to the same text, so it can only ever land in the same split
    assert normalize_text("Text Number 1 http://x.y") == "text number 1"
    assert split_of(normalize_text("Text Number 1 http://x.y")) == "test"


@pytest.fixture(scope="module")
def bundled():
    """The bundled tweets as a binary dataset, read once for the tests that only read it."""
    return load_dataset("default")


def test_the_bundled_splits_are_the_measured_ones(bundled):
    """The figures of the default model (STACK.md) were measured on these splits of the bundled tweets."""
    dataset = bundled
    assert {name: len(rows) for name, rows in dataset.splits.items()} == {"train": 18097, "validation": 2255,
                                                                           "test": 2221}
    first = {name: rows[0].text for name, rows in dataset.splits.items()}
    assert first["train"].startswith("I just don't trust my life in google's hands #driverless")
    assert first["validation"].startswith("I look at Google")
    assert first["test"].startswith("There is an acceptable level of risk with all new technology")


def test_bundled_dataset_matches_the_measured_corpus(bundled):
    binary = bundled
    assert binary.labels == ("negative", "positive")
    assert binary.stats["repaired_rows"] == 4934
    texts = {name: {normalize_text(row.text) for row in rows} for name, rows in binary.splits.items()}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["validation"]
    three = load_dataset("default", neutral=True)
    assert three.labels == ("negative", "neutral", "positive")
    assert three.stats["conflicting_groups"] == 108  # as measured in STACK.md
    assert sum(len(rows) for rows in three.splits.values()) == three.stats["texts"] - three.stats["ties_dropped"]


def test_user_file_labels_and_errors(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"t": f"text {i}", "y": "yes" if i % 3 else "no"}) + "\n" for i in range(60)))
    dataset = load_dataset(path, text_column="t", label_column="y")
    assert dataset.labels == ("no", "yes")
    assert load_dataset(path, text_column="t", label_column="y", labels=("yes", "no")).labels == ("yes", "no")
    with pytest.raises(DataError, match=r"d.jsonl:1: unknown label 'no'; the model knows maybe, yes"):
        load_dataset(path, text_column="t", label_column="y", labels=("yes", "maybe"))
    one = tmp_path / "one.csv"
    one.write_text("text,label\na,x\nb,x\n")
    with pytest.raises(DataError, match="needs at least two labels"):
        load_dataset(one)
    unlabelled = tmp_path / "u.csv"
    unlabelled.write_text("text\na\n")
    with pytest.raises(DataError, match=r"u.csv:2: no 'label' on this row"):
        load_dataset(unlabelled)
