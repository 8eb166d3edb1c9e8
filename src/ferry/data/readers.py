"""Read labelled (or unlabelled) texts from CSV or JSONL, strictly: bad input is an error with file and line.

User files must be UTF-8. The format follows the suffix: ``.csv`` (header row), ``.jsonl`` / ``.ndjson``
(one object per line), ``.txt`` (one text per line, no labels).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ferry.data.exceptions import DataError

CSV_SUFFIXES = (".csv",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")
TEXT_SUFFIXES = (".txt",)


@dataclass(frozen=True)
class Example:
    text: str
    label: str | None
    line: int


def read_examples(
    path: Path | str,
    *,
    text_column: str = "text",
    label_column: str = "label",
    require_labels: bool = False,
    allowed_labels: set[str] | None = None,
) -> list[Example]:
    """Every row of the file as an :class:`Example`; raise :class:`DataError` at the first bad row.

    A file either labels every row or none (``require_labels`` makes the labels mandatory);
    ``allowed_labels`` refuses labels outside the set.
    """
    path = Path(path)
    raw = _read_utf8(path)
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        rows = _csv_rows(path, raw, text_column, label_column)
    elif suffix in JSONL_SUFFIXES:
        rows = _jsonl_rows(path, raw, text_column, label_column)
    elif suffix in TEXT_SUFFIXES:
        rows = ((number, line, None) for number, line in enumerate(raw.splitlines(), start=1) if line.strip())
    else:
        accepted = ", ".join(CSV_SUFFIXES + JSONL_SUFFIXES + TEXT_SUFFIXES)
        raise DataError(path, f"unknown format {suffix or '(no suffix)'!r}; use one of {accepted}")
    examples = [Example(text=text, label=label, line=number) for number, text, label in rows]
    if not examples:
        raise DataError(path, "holds no rows")
    _check_labels(path, examples, label_column, require_labels, allowed_labels)
    return examples


def _read_utf8(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "no such file") from None
    except IsADirectoryError:
        raise DataError(path, "is a folder, not a file") from None
    except OSError as exc:
        raise DataError(path, f"cannot be read ({exc.strerror or exc.__class__.__name__})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(path, f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})", line) from None
    if not text.strip():
        raise DataError(path, "is empty")
    return text


def _csv_rows(path: Path, raw: str, text_column: str, label_column: str) -> Iterator[tuple[int, str, str | None]]:
    reader = csv.reader(io.StringIO(raw, newline=""), strict=True)
    try:
        header = next(reader)
    except csv.Error as exc:
        raise DataError(path, f"malformed CSV header ({exc})", 1) from None
    if text_column not in header:
        raise DataError(path, f"no column {text_column!r} in the header (columns: {', '.join(header)})", 1)
    text_index = header.index(text_column)
    label_index = header.index(label_column) if label_column in header else None
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(path, f"malformed CSV ({exc})", reader.line_num) from None
        if not row:
            continue
        if len(row) != len(header):
            raise DataError(path, f"ragged row: {len(row)} fields, the header has {len(header)}", reader.line_num)
        label = row[label_index] if label_index is not None else None
        yield reader.line_num, _text(path, row[text_index], reader.line_num), label or None


def _jsonl_rows(
    path: Path, raw: str, text_column: str, label_column: str
) -> Iterator[tuple[int, str, str | None]]:
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(path, f"not valid JSON ({exc.msg}, column {exc.colno})", number) from None
        if not isinstance(record, dict):
            raise DataError(path, f"expected a JSON object, got {type(record).__name__}", number)
        if text_column not in record:
            raise DataError(path, f"no field {text_column!r}", number)
        label = record.get(label_column)
        if (label is not None and not isinstance(label, str | int)) or isinstance(label, bool):
            raise DataError(path, f"field {label_column!r} must be a string, got {type(label).__name__}", number)
        yield number, _text(path, record[text_column], number), None if label is None else str(label)


def _text(path: Path, value: object, line: int) -> str:
    if not isinstance(value, str):
        raise DataError(path, f"the text must be a string, got {type(value).__name__}", line)
    if not value.strip():
        raise DataError(path, "the text is empty", line)
    return value


def _check_labels(
    path: Path,
    examples: list[Example],
    label_column: str,
    require_labels: bool,
    allowed_labels: set[str] | None,
) -> None:
    labelled = [example for example in examples if example.label is not None]
    if require_labels or labelled:
        for example in examples:
            if example.label is None:
                raise DataError(path, f"no {label_column!r} on this row; label every row or none", example.line)
    if allowed_labels is not None:
        for example in labelled:
            if example.label not in allowed_labels:
                raise DataError(
                    path,
                    f"unknown label {example.label!r}; the model knows {', '.join(sorted(allowed_labels))}",
                    example.line,
                )
