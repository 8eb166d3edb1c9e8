from __future__ import annotations

import json
import subprocess
import sys

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


def test_splits_follow_the_normalised_text_and_their_fractions():
    assert split_of("some text") == split_of("some text")
    texts = [f"text number {i}" for i in range(4000)]
    dataset = build_dataset([(t, "a" if i % 2 else "b", None) for i, t in enumerate(texts)], ("a", "b"), "x")
    sizes = {name: len(rows) for name, rows in dataset.splits.items()}
    assert abs(sizes["train"] - 3200) < 120 and abs(sizes["validation"] - 400) < 80 and abs(sizes["test"] - 400) < 80
    # a near-copy normalises to the same text, so it can only ever land in the same split
    assert split_of(normalize_text("Text Number 7 http://x.y")) == split_of(normalize_text("text number 7"))


def test_splits_are_the_same_in_another_process():
    dataset = load_dataset("default")
    here = {name: [row.text for row in rows[:50]] for name, rows in dataset.splits.items()}
    probe = ("import json; from ferry.data.dataset import load_dataset; d = load_dataset('default'); "
             "print(json.dumps({n: [r.text for r in rows[:50]] for n, rows in d.splits.items()}))")
    other = json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                      check=True, env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout)
    assert other == here


def test_bundled_dataset_matches_the_measured_corpus():
    binary = load_dataset("default")
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
