"""Batch predictions for files dropped in S3: one output line per input line, in order, streamed.

``input/<model>/<name>.jsonl`` (one ``{"text": ...}`` object a line, an ``"id"`` kept when present) or
``.csv`` (a header with a ``text`` column) becomes ``output/<model>/<name>.<etag>.predictions.jsonl``; lines
that cannot be used go, with their line number and the reason, to ``...errors.jsonl`` beside it. The etag
in the names makes a redelivered event find its output already there and do nothing.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, Any
from urllib.parse import unquote_plus

from ferry.runtime.constants import TEXT_CLASSIFICATION
from ferry.runtime.exceptions import FerryRuntimeError
from ferry.runtime.service import PredictionService

INPUT_PREFIX = "input/"
OUTPUT_PREFIX = "output/"
CHUNK = 32


class BatchInputError(FerryRuntimeError):
    """An S3 object that cannot be a batch input (wrong place, unknown format)."""


@dataclass(frozen=True)
class BatchObject:
    bucket: str
    key: str
    etag: str
    model: str
    name: str
    suffix: str

    @property
    def output_key(self) -> str:
        return f"{OUTPUT_PREFIX}{self.model}/{self.name}.{self.etag}.predictions.jsonl"

    @property
    def errors_key(self) -> str:
        return f"{OUTPUT_PREFIX}{self.model}/{self.name}.{self.etag}.errors.jsonl"


@dataclass
class BatchResult:
    key: str
    predicted: int = 0
    errors: int = 0
    skipped: bool = False  # already done: a redelivered event


def objects_of(event: dict[str, Any]) -> Iterator[BatchObject]:
    for record in event.get("Records") or []:
        s3 = record.get("s3") or {}
        key = unquote_plus(s3.get("object", {}).get("key", ""))
        path = PurePosixPath(key)
        if not key.startswith(INPUT_PREFIX) or len(path.parts) != 3:
            raise BatchInputError(f"s3 key {key!r}: batch inputs go to {INPUT_PREFIX}<model>/<file>.jsonl or .csv")
        if path.suffix not in (".jsonl", ".csv"):
            raise BatchInputError(f"s3 key {key!r}: unknown format {path.suffix!r}; use .jsonl or .csv")
        etag = str(s3.get("object", {}).get("eTag") or s3.get("object", {}).get("sequencer") or "noetag").strip('"')
        yield BatchObject(bucket=s3["bucket"]["name"], key=key, etag=etag, model=path.parts[1], name=path.stem,
                          suffix=path.suffix)


def _lines(stream: IO[bytes], suffix: str) -> Iterator[tuple[int, str | None, str | None, str | None]]:
    """(line number, text, id, error) for each line of the input, read as a stream."""
    text_stream = io.TextIOWrapper(stream, encoding="utf-8", errors="strict", newline="")
    return _csv_lines(text_stream) if suffix == ".csv" else _jsonl_lines(text_stream)


def _csv_lines(text_stream: IO[str]) -> Iterator[tuple[int, str | None, str | None, str | None]]:
    reader = csv.DictReader(text_stream)
    try:
        if not reader.fieldnames or "text" not in reader.fieldnames:
            yield 1, None, None, f"the header has no 'text' column (columns: {reader.fieldnames})"
            return
        for row in reader:
            text = row.get("text")
            yield reader.line_num, text, row.get("id"), None if text and text.strip() else "the text is empty"
    except (csv.Error, UnicodeDecodeError) as exc:
        yield reader.line_num, None, None, f"unreadable ({exc.__class__.__name__})"


def _jsonl_lines(text_stream: IO[str]) -> Iterator[tuple[int, str | None, str | None, str | None]]:
    number = 0
    while True:
        try:
            line = text_stream.readline()
        except UnicodeDecodeError:
            yield number + 1, None, None, "not valid UTF-8"
            return
        if not line:
            return
        number += 1
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            yield number, None, None, f"not valid JSON ({exc})"
            continue
        if not isinstance(record, dict) or not isinstance(record.get("text"), str) or not record["text"].strip():
            yield number, None, None, 'expected an object with a non-empty "text" string'
            continue
        identifier = record.get("id")
        yield number, record["text"], None if identifier is None else str(identifier), None


def run_batch(s3: Any, obj: BatchObject, service: PredictionService) -> BatchResult:
    result = BatchResult(key=obj.key)
    if _exists(s3, obj.bucket, obj.output_key):
        result.skipped = True
        return result
    predictor = service.store.get(obj.model)
    body = s3.get_object(Bucket=obj.bucket, Key=obj.key)["Body"]
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as work:
        out_path, err_path = os.path.join(work, "out.jsonl"), os.path.join(work, "err.jsonl")
        with open(out_path, "w", encoding="utf-8") as out, open(err_path, "w", encoding="utf-8") as err:
            pending: list[tuple[int, str, str | None]] = []
            for number, text, identifier, error in _lines(body, obj.suffix):
                if error is not None or text is None:
                    err.write(json.dumps({"line": number, "error": error}) + "\n")
                    result.errors += 1
                    continue
                if len(text) > service.settings.max_input_chars:
                    err.write(json.dumps({"line": number, "error": f"over {service.settings.max_input_chars} "
                                                                   "characters"}) + "\n")
                    result.errors += 1
                    continue
                pending.append((number, text, identifier))
                if len(pending) == CHUNK:
                    result.predicted += _flush(pending, out, service, predictor.task, obj.model)
            result.predicted += _flush(pending, out, service, predictor.task, obj.model)
        if result.errors:
            s3.upload_file(err_path, obj.bucket, obj.errors_key)
        s3.upload_file(out_path, obj.bucket, obj.output_key)  # last: its presence means the batch is done
    return result


def _flush(pending: list[tuple[int, str, str | None]], out: IO[str], service: PredictionService, task: str,
           model: str) -> int:
    if not pending:
        return 0
    texts = [text for _, text, _ in pending]
    answer = service.classify(model, texts) if task == TEXT_CLASSIFICATION else service.embed(model, texts)
    for (number, _, identifier), prediction_id, output in zip(pending, answer.prediction_ids, answer.payload,
                                                              strict=True):
        line: dict[str, Any] = {"line": number, "prediction_id": prediction_id}
        if identifier is not None:
            line["id"] = identifier
        line["predictions" if task == TEXT_CLASSIFICATION else "embedding"] = output
        out.write(json.dumps(line) + "\n")
    count = len(pending)
    pending.clear()
    return count


def _exists(s3: Any, bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True
