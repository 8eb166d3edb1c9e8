"""A labelled dataset ready for training: duplicates merged, and deterministic train/validation/test splits.

The split of a text is decided by a hash of its normalised form, so the same text (and every near-copy that
normalises to it: a retweet, a different URL) never lands in two splits, and a split never changes between
runs, processes or machines.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferry.data.corpus import BINARY, THREE_CLASSES, load_corpus
from ferry.data.exceptions import DataError
from ferry.data.readers import Example, read_examples
from ferry.data.topics import check_topics, topic_of

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
BUNDLED = "default"
_URL = re.compile(r"(https?://|www\.)\S+")
_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Lowercase, without URLs, whitespace collapsed: what decides duplicates and splits."""
    return _SPACES.sub(" ", _URL.sub(" ", text.lower())).strip()


def split_of(normalized: str, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> str:
    """The split a normalised text belongs to: a stable function of its sha256."""
    position = int.from_bytes(hashlib.sha256(normalized.encode("utf-8")).digest()[:8], "big") / 2**64
    cumulative = 0.0
    for name, fraction in zip(SPLITS, fractions, strict=True):
        cumulative += fraction
        if position < cumulative:
            return name
    return SPLITS[-1]


@dataclass(frozen=True)
class LabelledText:
    text: str
    label: str
    confidence: float | None = None
    copies: int = 1  # rows of the source that normalised to this text


@dataclass
class Dataset:
    labels: tuple[str, ...]
    splits: dict[str, list[LabelledText]]
    source: str
    stats: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, dict[str, int]]:
        return {name: dict(Counter(item.label for item in rows)) for name, rows in self.splits.items()}


def merge_duplicates(
    rows: Sequence[tuple[str, str, float | None]],
) -> tuple[list[tuple[str, LabelledText]], dict[str, int]]:
    """Merge rows whose texts normalise alike: the majority label wins, a tie drops the group.

    Returns (normalised text, merged row) pairs in first-seen order, and counts of what was merged and dropped.
    """
    groups: dict[str, list[tuple[str, str, float | None]]] = {}
    for text, label, confidence in rows:
        groups.setdefault(normalize_text(text), []).append((text, label, confidence))
    merged: list[tuple[str, LabelledText]] = []
    stats = {"rows": len(rows), "texts": len(groups), "duplicate_rows": len(rows) - len(groups),
             "conflicting_groups": 0, "ties_dropped": 0, "rows_dropped": 0}
    for normalized, members in groups.items():
        votes = Counter(label for _, label, _ in members).most_common()
        if len(votes) > 1:
            stats["conflicting_groups"] += 1
            if votes[0][1] == votes[1][1]:
                stats["ties_dropped"] += 1
                stats["rows_dropped"] += len(members)
                continue
        label = votes[0][0]
        confidences = [c for _, member_label, c in members if member_label == label and c is not None]
        text = next(member_text for member_text, member_label, _ in members if member_label == label)
        merged.append((normalized, LabelledText(text, label, max(confidences) if confidences else None,
                                                len(members))))
    return merged, stats


def build_dataset(
    rows: Sequence[tuple[str, str, float | None]],
    labels: Sequence[str],
    source: str,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> Dataset:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"split fractions must be three non-negative numbers adding up to 1, got {fractions}")
    merged, stats = merge_duplicates(rows)
    splits: dict[str, list[LabelledText]] = {name: [] for name in SPLITS}
    for normalized, item in merged:
        splits[split_of(normalized, fractions)].append(item)
    return Dataset(labels=tuple(labels), splits=splits, source=source, stats=stats)


def load_dataset(
    data: str | Path,
    *,
    labels: Sequence[str] | None = None,
    neutral: bool = False,
    text_column: str = "text",
    label_column: str = "label",
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    exclude_topics: Sequence[str] = (),
) -> Dataset:
    """The bundled tweets (``data="default"``) or a labelled CSV/JSONL file, merged and split.

    For a file, ``labels`` (when given) is the closed set of labels and their order; otherwise the labels
    found, sorted. For the tweets, negative/positive, or all three classes with ``neutral``. Texts of the
    ``exclude_topics`` (:mod:`ferry.data.topics`) are left out; the others keep their splits (a text's split is a
    function of the text alone).
    """
    excluded = check_topics(exclude_topics)

    def kept(text: str) -> bool:
        return not excluded or topic_of(text) not in excluded

    if str(data) == BUNDLED:
        classes = THREE_CLASSES if neutral else BINARY
        corpus = load_corpus(labels=classes)
        rows = [(e.text, str(e.label), c) for e, c in zip(corpus.examples, corpus.confidence, strict=True)
                if kept(e.text)]
        dataset = build_dataset(rows, classes, f"bundled tweets ({corpus.path.name})", fractions)
        dataset.stats["repaired_rows"] = corpus.repaired_rows
        return dataset
    path = Path(data)
    examples: list[Example] = read_examples(path, text_column=text_column, label_column=label_column,
                                            require_labels=True, allowed_labels=set(labels) if labels else None)
    found = sorted({str(e.label) for e in examples})
    if len(found) < 2 and not labels:
        raise DataError(path, f"needs at least two labels to train a classifier, found {found}")
    return build_dataset([(e.text, str(e.label), None) for e in examples if kept(e.text)], tuple(labels or found),
                         str(path), fractions)
