"""The texts every candidate gets: the model's labelled test split, and from it the batches of each shape.

Shapes are batch x tokens: 1 x 32, 1 x 128, 8 x 32 and 8 x 128, counted with the model's own tokenizer, [CLS] and
[SEP] included. About-32-token texts are tweets of the test split picked by length (exactly 32 when there are eight
such, else the eight nearest). Tweets are shorter than 128 tokens (median 33, p99 60), so the long texts are test
tweets joined word by word, in file order, up to 128 tokens without going over. No candidate truncates them: for
the latency shapes each one's truncation is lifted to the longest text (a model served at a max_length under 128,
as the tweets' classifier at 64, would cut them); the accuracy pass truncates at the model's max_length, as served.
A batch-1 shape cycles through its eight texts, one per call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferry.bench.exceptions import InvalidBenchConfigError

SHORT_TOKENS = 32
LONG_TOKENS = 128
PER_SHAPE = 8  # texts of each length: the batch-8 shape is all of them
SHAPES = ("1x32", "1x128", "8x32", "8x128")

Counter = Callable[[Sequence[str]], list[int]]  # tokens of each text, specials included, nothing truncated


@dataclass(frozen=True)
class Row:
    text: str
    label: str


@dataclass(frozen=True)
class TestSplit:
    rows: list[Row]
    source: str


@dataclass(frozen=True)
class Shape:
    name: str
    batch: int
    tokens: int  # the target
    batches: list[list[str]]
    token_lengths: list[int]  # of each text

    def to_dict(self) -> dict[str, Any]:
        return {"batch": self.batch, "target_tokens": self.tokens, "token_lengths": self.token_lengths,
                "texts": [text for batch in self.batches for text in batch][:PER_SHAPE]}


def load_test_split(data: Path | None, source: Path, labels: Sequence[str]) -> TestSplit:
    """The labelled rows to measure on: `data` when given, else the source's predictions/test.jsonl (what
    `ferry train` wrote), else the bundled tweets' test split. Rows whose label the model does not have are an
    error: accuracy against them would mean nothing."""
    from ferry.data.readers import read_examples

    if data is None and (source / "predictions" / "test.jsonl").is_file():
        data = source / "predictions" / "test.jsonl"
    if data is not None:
        if not data.is_file():
            raise InvalidBenchConfigError(f"{data}: no such file", field="data")
        rows = [Row(e.text, str(e.label)) for e in read_examples(data, require_labels=True)]
        where = str(data)
    else:
        from ferry.data.dataset import BUNDLED, load_dataset

        rows = [Row(item.text, item.label) for item in load_dataset(BUNDLED).splits["test"]]
        where = "the bundled tweets' test split (ferry.data.load_dataset('default'))"
    unknown = sorted({row.label for row in rows} - set(labels))
    if unknown:
        raise InvalidBenchConfigError(f"{where}: labels {unknown} are not the model's ({', '.join(labels)})",
                                      field="data")
    return TestSplit(rows, where)


def accuracy_rows(split: TestSplit, count: int) -> list[Row]:
    """All rows (`count` 0), or `count` of them evenly spaced over the file: the same rows for every candidate."""
    if count <= 0 or count >= len(split.rows):
        return list(split.rows)
    step = len(split.rows) / count
    return [split.rows[int(index * step)] for index in range(count)]


def shapes(split: TestSplit, count: Counter) -> dict[str, Shape]:
    """The four shapes' batches, from the test split."""
    texts = [row.text for row in split.rows]
    short = nearest(texts, count, SHORT_TOKENS)
    long = joined(texts, count, LONG_TOKENS)
    found: dict[str, Shape] = {}
    for target, picked in ((SHORT_TOKENS, short), (LONG_TOKENS, long)):
        lengths = count(picked)
        found[f"1x{target}"] = Shape(f"1x{target}", 1, target, [[text] for text in picked], lengths)
        found[f"8x{target}"] = Shape(f"8x{target}", PER_SHAPE, target, [picked], lengths)
    return {name: found[name] for name in SHAPES}


def nearest(texts: Sequence[str], count: Counter, target: int) -> list[str]:
    """Eight distinct texts whose token counts are nearest `target` (exact ones first, in file order)."""
    distinct = list(dict.fromkeys(texts))
    lengths = count(distinct)
    ranked = sorted(range(len(distinct)), key=lambda index: (abs(lengths[index] - target), index))
    return [distinct[index] for index in ranked[:PER_SHAPE]]


def joined(texts: Sequence[str], count: Counter, target: int) -> list[str]:
    """Eight texts of the test split's words in file order, each as long as it gets without passing `target`
    tokens (a word that would pass it starts the next text)."""
    words = [word for text in texts for word in text.split()]
    made: list[str] = []
    current: list[str] = []
    for word in words:
        if current and count([" ".join([*current, word])])[0] > target:
            made.append(" ".join(current))
            current = []
            if len(made) == PER_SHAPE:
                return made
        current.append(word)
    raise InvalidBenchConfigError(f"the test split has too few words for {PER_SHAPE} texts of {target} tokens",
                                  field="data")
