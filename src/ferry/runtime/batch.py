"""Batch predictions for files dropped in S3: one output line per input record, in order, streamed.

``input/<model>/<name>.jsonl`` (one ``{"text": ...}`` object a line, an ``"id"`` kept when present) or
``.csv`` (a header with a ``text`` column, an ``id`` column kept when present) becomes
``output/<model>/<name>.<etag>.predictions.jsonl``; records that cannot be used go, with their line number and
the reason, to ``...errors.jsonl`` beside it. Every record ends up in exactly one of the two:
``predicted + errors == records`` is checked before anything is marked done.

Reading: :class:`Lines` splits the object's bytes on ``\\n`` itself, a block at a time, and never holds more of
a line than :func:`max_line_bytes`; a longer line is one error and reading resumes after its newline. Each
format has a reader (:class:`JsonlRecords`, :class:`CsvRecords`) that turns lines into :class:`Record`\\ s and
decodes and parses line by line (record by record for CSV), so a bad byte or bad JSON costs one record.

Writing: :class:`ObjectStream` sends the output to S3 as it is produced, as the parts of a multipart upload
(nothing goes through /tmp), completed only when the whole file is done and aborted otherwise. The predictions
object is completed last: its presence means the file is done, and the etag in its name makes a redelivered
event find it and do nothing. A file that cannot be finished (an S3 error, too little of the function's time
left, records unaccounted for) raises :class:`BatchIncompleteError` or the S3 error, so that Lambda retries it
and then records it in the dead-letter queue; prediction ids derive from the object's key, etag and record line,
so a rerun writes the same output and captures nothing twice (they are issued like every other id, with the model's
version and a mac: :mod:`ferry.runtime.ids`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import PurePosixPath
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import unquote_plus

from ferry.runtime.constants import FEATURE_EXTRACTION, TEXT_CLASSIFICATION
from ferry.runtime.exceptions import BatchIncompleteError as BatchIncompleteError  # importable from here as before
from ferry.runtime.exceptions import BatchInputError as BatchInputError
from ferry.runtime.ids import NONCE_HEX_DIGITS, PredictionIds
from ferry.runtime.service import CHANNEL_BATCH, Answer, PredictionService
from ferry.runtime.texts import text_error

log = logging.getLogger(__name__)

INPUT_PREFIX = "input/"
OUTPUT_PREFIX = "output/"
CHUNK = 32  # records per model call
READ_BYTES = 1 << 20  # read from S3 a block at a time
BYTES_PER_CHAR = 12  # the most one character takes in a JSON line: an escaped surrogate pair, \ud83d\ude00
LINE_OVERHEAD_BYTES = 64 * 1024  # room for an id and other fields beside the longest accepted text
MIN_PART_BYTES = 5 * 1024 * 1024  # S3's smallest part, the last one excepted
PART_BYTES = 8 * 1024 * 1024  # 10,000 parts (S3's most) of this hold 78 GiB, far more than 15 minutes produce
SAFETY_MARGIN_MS = 60_000  # stop when less of the function's time is left: enough to abort the uploads
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")  # what errors="surrogateescape" makes of a byte that is not UTF-8
_UTF8_BOM = b"\xef\xbb\xbf"
# The key of an output line's answer, by the model's task: a classifier's labels, an embedder's vector.
OUTPUT_FIELDS = {TEXT_CLASSIFICATION: "predictions", FEATURE_EXTRACTION: "embedding"}
PREDICTIONS_SUFFIX = ".predictions.jsonl"
ERRORS_SUFFIX = ".errors.jsonl"
PARTS_SUFFIX = ".parts/"


def max_line_bytes(max_input_chars: int) -> int:
    """The longest line (or CSV record) read, in bytes: the longest accepted text, fully escaped, plus room."""
    return max_input_chars * BYTES_PER_CHAR + LINE_OVERHEAD_BYTES


# -- where files go: the one owner of the keys -------------------------------------------------------------------

def input_key(model: str, file_name: str) -> str:
    """Where a file to predict with `model` is dropped: ``input/<model>/<file name>``."""
    return f"{INPUT_PREFIX}{model}/{file_name}"


@dataclass(frozen=True)
class OutputKeys:
    """Where the outputs of one version (`etag`) of an input file go: its predictions, its refused records (only
    when there are some) and, for a file predicted in chunks, the prefix of the chunks' parts."""

    predictions: str
    errors: str
    parts: str


def output_keys(model: str, name: str, etag: str) -> OutputKeys:
    """``output/<model>/<name>.<etag>.predictions.jsonl``, ``...errors.jsonl`` and ``...parts/`` for the input
    ``input/<model>/<name>.<suffix>`` whose version is `etag`."""
    stem = f"{OUTPUT_PREFIX}{model}/{name}.{etag}"
    return OutputKeys(stem + PREDICTIONS_SUFFIX, stem + ERRORS_SUFFIX, stem + PARTS_SUFFIX)


def output_keys_of(predictions_key: str) -> OutputKeys:
    """The outputs that go with a predictions key (what the batch function's summary names as ``output``)."""
    stem = predictions_key.removesuffix(PREDICTIONS_SUFFIX)
    if stem == predictions_key or not stem.startswith(OUTPUT_PREFIX):
        raise BatchInputError(f"s3 key {predictions_key!r} is not a batch output ({OUTPUT_PREFIX}<model>/<name>."
                              f"<etag>{PREDICTIONS_SUFFIX})")
    return OutputKeys(predictions_key, stem + ERRORS_SUFFIX, stem + PARTS_SUFFIX)


@dataclass(frozen=True)
class BatchObject:
    bucket: str
    key: str
    etag: str
    model: str
    name: str
    suffix: str

    @property
    def outputs(self) -> OutputKeys:
        return output_keys(self.model, self.name, self.etag)

    @property
    def output_key(self) -> str:
        return self.outputs.predictions

    @property
    def errors_key(self) -> str:
        return self.outputs.errors

    def prediction_nonce(self, line: int) -> str:
        """The nonce of the id of this object's record at `line`: the same every time, from the key, the etag
        and the line (the first NONCE_HEX_DIGITS hex digits of their sha256)."""
        return hashlib.sha256(f"{self.key}\n{self.etag}\n{line}".encode()).hexdigest()[:NONCE_HEX_DIGITS]

    def prediction_id(self, line: int, ids: PredictionIds, version: str) -> str:
        """The id of this object's record at `line` predicted by `version` of the model, issued by `ids` (the
        service's) from :meth:`prediction_nonce`: the same every time, so that a rerun of the file captures
        nothing twice (the capture function's conditional put drops what it has)."""
        return ids.issue(self.model, version, self.prediction_nonce(line))


@dataclass
class BatchResult:
    key: str
    records: int = 0  # records in the input: each is predicted or an error
    predicted: int = 0
    errors: int = 0
    skipped: bool = False  # already done: a redelivered event
    chunks: int = 0  # a file predicted in chunks (ferry.runtime.chunks): how many
    execution: str | None = None  # the state machine execution that predicts its chunks, when one was started


@dataclass(frozen=True)
class Record:
    """One input record: where it starts (1-based physical line) and its text, or why it cannot be used."""

    line: int
    text: str | None = None
    id: str | None = None
    error: str | None = None


def objects_of(event: dict[str, Any]) -> Iterator[BatchObject]:
    for record in event.get("Records") or []:
        s3 = record.get("s3") or {}
        key = unquote_plus(s3.get("object", {}).get("key", ""))
        path = PurePosixPath(key)
        if not key.startswith(INPUT_PREFIX) or len(path.parts) != 3:
            raise BatchInputError(f"s3 key {key!r}: batch inputs go to {input_key('<model>', '<file>')}.jsonl or .csv")
        if path.suffix not in READERS:
            raise BatchInputError(f"s3 key {key!r}: unknown format {path.suffix!r}; use .jsonl or .csv")
        etag = str(s3.get("object", {}).get("eTag") or s3.get("object", {}).get("sequencer") or "noetag").strip('"')
        yield BatchObject(bucket=s3["bucket"]["name"], key=key, etag=etag, model=path.parts[1], name=path.stem,
                          suffix=path.suffix)


# -- reading ----------------------------------------------------------------------------------------------------

class Lines:
    """The physical lines of a byte stream: ``(number, bytes without the newline)``, or ``(number, None)`` for a
    line over `max_bytes`, whose bytes are passed over up to its newline without being kept.

    Reads `block` bytes at a time: memory holds one block and at most `max_bytes` of a line, whatever the file.
    A UTF-8 byte order mark before the first line is dropped. ``exhausted`` says the stream was read to its end.
    """

    def __init__(self, stream: Any, max_bytes: int, block: int = READ_BYTES, *, first_line: int = 1,
                 header_lines: int = 0):
        """`first_line` numbers the stream's first line after its `header_lines` (a chunk of a file starts at a
        line of its own; a CSV chunk is read after the file's header lines, which keep their numbers)."""
        self.stream = stream
        self.max_bytes = max_bytes
        self.block = block
        self.first_line = first_line
        self.header_lines = header_lines
        self.count = 0  # lines handed out so far
        self.exhausted = False

    def __iter__(self) -> Iterator[tuple[int, bytes | None]]:
        pending = bytearray()
        overlong = False
        while chunk := self.stream.read(self.block):
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                piece = chunk[start:end]
                overlong = overlong or len(pending) + len(piece) > self.max_bytes
                line = None if overlong else bytes(pending) + piece
                pending.clear()
                overlong = False
                start = end + 1
                yield self._numbered(line)
            if not overlong:
                overlong = len(pending) + len(chunk) - start > self.max_bytes
                if overlong:
                    pending.clear()
                else:
                    pending += chunk[start:]
        if pending or overlong:
            yield self._numbered(None if overlong else bytes(pending))
        self.exhausted = True

    def _numbered(self, line: bytes | None) -> tuple[int, bytes | None]:
        self.count += 1
        if self.count == 1 and line is not None and line.startswith(_UTF8_BOM):
            line = line[len(_UTF8_BOM):]
        if self.count <= self.header_lines:
            return self.count, line
        return self.count - self.header_lines - 1 + self.first_line, line


class RecordReader(Protocol):
    """The records of one format. ``records`` counts every record found, each yielded once: after the last,
    what was predicted plus what was refused must add up to it."""

    records: int

    def __init__(self, lines: Lines) -> None: ...

    def __iter__(self) -> Iterator[Record]: ...


class JsonlRecords:
    """One record per line that is not blank: a JSON object with a ``"text"`` string (and an ``"id"``, kept)."""

    def __init__(self, lines: Lines):
        self.lines = lines
        self.records = 0

    def __iter__(self) -> Iterator[Record]:
        for number, raw in self.lines:
            if raw is None:
                self.records += 1
                yield Record(number, error=f"the line is longer than {self.lines.max_bytes} bytes")
            elif raw.strip():
                self.records += 1
                yield _json_record(number, raw)


def _json_record(number: int, raw: bytes) -> Record:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Record(number, error=f"not valid UTF-8: byte {exc.start + 1} of the line is 0x{raw[exc.start]:02x}")
    try:
        value = json.loads(line)
    except RecursionError:
        return Record(number, error="not valid JSON: nested too deep")
    except ValueError as exc:
        return Record(number, error=f"not valid JSON: {exc}")
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        return Record(number, error='expected an object with a "text" string')
    identifier = value.get("id")
    return Record(number, text=value["text"], id=None if identifier is None else str(identifier))


class _RecordTooLong(Exception):
    """Raised into the csv module by :class:`_CsvLines` when a record grows past the limit."""


class _CsvLines:
    """Lines for the csv module, decoded with ``surrogateescape`` so that a byte that is not UTF-8 stays in its
    row; counts the bytes of the record being read and refuses to go past the limit."""

    def __init__(self, lines: Lines):
        self._lines = iter(lines)
        self.max_bytes = lines.max_bytes
        self.number = 0  # the last physical line handed to the csv module
        self.record_start = 0  # the line the record being read starts on
        self.record_bytes = 0

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        self.number, raw = next(self._lines)
        if self.record_bytes == 0:
            self.record_start = self.number
        if raw is None or self.record_bytes + len(raw) > self.max_bytes:
            raise _RecordTooLong
        self.record_bytes += len(raw) + 1
        return raw.decode("utf-8", "surrogateescape") + "\n"


def csv_rows(lines: Lines) -> Iterator[tuple[int, list[str] | None, str | None]]:
    """Every CSV record of `lines` that is not blank, header included: the line where it starts, its cells (None
    when it cannot be read) and what is wrong with it (None when nothing is). A record over the line limit is one
    problem, and reading resumes at the next line; a bad byte stays in its cell (its escape), for the caller to
    judge. The labels files of the feedback function are read with it too."""
    if csv.field_size_limit() < lines.max_bytes:  # the default, 131,072, would end the file at a longer field
        csv.field_size_limit(lines.max_bytes)
    source = _CsvLines(lines)
    rows = csv.reader(source)
    while True:
        source.record_bytes, problem = 0, None
        try:
            row = next(rows)
        except StopIteration:
            return
        except _RecordTooLong:
            row, problem = None, f"the record is longer than {lines.max_bytes} bytes"
        except csv.Error as exc:
            row, problem = None, f"not valid CSV: {exc}"
        if row is not None and (not row or (len(row) == 1 and not row[0].strip())):
            continue  # a blank line
        yield source.record_start, row, problem


class CsvRecords:
    """One record per row after the header, numbered by the line where it starts (a quoted field may span
    lines); blank lines are no records. A record over the line limit is one error, and reading resumes at the
    next line (inside a quoted field that goes on, what follows reads as rows of its own)."""

    def __init__(self, lines: Lines):
        self.lines = lines
        self.records = 0

    def __iter__(self) -> Iterator[Record]:
        columns: list[str] | None = None
        for start, row, problem in csv_rows(self.lines):
            if columns is None:
                columns = _header(start, row, problem)
                continue
            self.records += 1
            yield Record(start, error=problem) if row is None else _csv_record(start, row, columns)


def _header(line: int, row: list[str] | None, problem: str | None) -> list[str]:
    if row is None or _ESCAPED_BYTE.search(",".join(row)):
        raise BatchInputError(f"the CSV header (line {line}) cannot be read: {problem or 'not valid UTF-8'}")
    columns = [name.strip() for name in row]
    if "text" not in columns:
        raise BatchInputError(f"the CSV header (line {line}) has no 'text' column; columns: {', '.join(columns)}")
    return columns


def _csv_record(line: int, row: list[str], columns: list[str]) -> Record:
    if any(_ESCAPED_BYTE.search(field) for field in row):
        return Record(line, error="not valid UTF-8")
    fields = dict(zip(columns, row, strict=False))
    if "text" not in fields:
        return Record(line, error=f"the row has {len(row)} fields and no 'text' (column {columns.index('text') + 1})")
    return Record(line, text=fields["text"], id=fields.get("id"))


READERS: dict[str, type[RecordReader]] = {".jsonl": JsonlRecords, ".csv": CsvRecords}


def checked(record: Record, max_chars: int) -> Record:
    """The record, or the record as an error when its text is not one the model may be given (the service's
    checks, so that no record the file refuses fails its model call)."""
    if record.error is not None or record.text is None:
        return record
    error = text_error(record.text, "the text", max_chars, per_text=False)
    return record if error is None else Record(record.line, error=str(error))


# -- writing ----------------------------------------------------------------------------------------------------

class ObjectStream:
    """An S3 object written as it is produced: what is written is sent as a part of a multipart upload each time
    `part_bytes` have gathered, so memory holds one part whatever the size of the object.

    :meth:`complete` makes the object (with one ``PutObject`` if it never reached a part); leaving the ``with``
    block without completing, on an error, aborts the upload so that no part of it remains.
    """

    def __init__(self, s3: Any, bucket: str, key: str, part_bytes: int = PART_BYTES):
        if part_bytes < MIN_PART_BYTES:
            raise ValueError(f"part_bytes={part_bytes}: S3 takes parts of {MIN_PART_BYTES} bytes or more")
        self.s3, self.bucket, self.key, self.part_bytes = s3, bucket, key, part_bytes
        self.size = 0
        self.parts: list[dict[str, Any]] = []
        self.upload_id: str | None = None
        self.completed = False
        self._buffer = bytearray()

    def __enter__(self) -> ObjectStream:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None,
                 ) -> None:
        if not self.completed:
            self.abort()

    def write(self, data: bytes) -> None:
        self._buffer += data
        self.size += len(data)
        if len(self._buffer) >= self.part_bytes:
            self._send_part()

    def complete(self, *, if_empty: bool = True) -> None:
        """Make the object from what was written; with ``if_empty=False``, make none if nothing was."""
        if self.upload_id is None:
            if self.size or if_empty:
                self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self._buffer),
                                   ContentType="application/x-ndjson")
        else:
            if self._buffer:
                self._send_part()
            self.s3.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                              MultipartUpload={"Parts": self.parts})
        self.completed = True

    def abort(self) -> None:
        """Drop the parts sent; an abort that fails is logged, not raised over the error that led to it."""
        from botocore.exceptions import BotoCoreError, ClientError

        self._buffer.clear()
        if self.upload_id is None or self.completed:
            return
        try:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
        except (BotoCoreError, ClientError):
            log.exception("aborting the upload of s3://%s/%s failed; a lifecycle rule must remove its parts",
                          self.bucket, self.key)
        self.upload_id = None

    def _send_part(self) -> None:
        if self.upload_id is None:
            self.upload_id = self.s3.create_multipart_upload(Bucket=self.bucket, Key=self.key,
                                                             ContentType="application/x-ndjson")["UploadId"]
        number = len(self.parts) + 1
        answer = self.s3.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number,
                                     Body=bytes(self._buffer))
        self.parts.append({"ETag": answer["ETag"], "PartNumber": number})
        self._buffer.clear()


# -- the batch --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Deadline:
    """Stop while `margin_ms` of the function's time is left rather than be killed in the middle of a write."""

    remaining_ms: Callable[[], int] | None = None  # Lambda's context.get_remaining_time_in_millis
    margin_ms: int = SAFETY_MARGIN_MS

    @classmethod
    def of(cls, remaining_ms: Callable[[], int] | None, margin_ms: int = SAFETY_MARGIN_MS) -> Deadline:
        """A deadline for an invocation that starts now: the margin is `margin_ms` or a tenth of the time left,
        the smaller, so that a function given a short timeout still has most of it to work."""
        if remaining_ms is None:
            return cls()
        return cls(remaining_ms, min(margin_ms, remaining_ms() // 10))

    def check(self, obj: BatchObject, result: BatchResult) -> None:
        if self.remaining_ms is None:
            return
        left = self.remaining_ms()
        if left < self.margin_ms:
            raise BatchIncompleteError(
                f"{obj.key}: stopped with {left / 1000:.1f} s of the function's time left (the margin is "
                f"{self.margin_ms / 1000:.1f} s) after {result.predicted + result.errors} records; nothing was "
                "written: give the function a longer timeout or split the file")


def run_batch(s3: Any, obj: BatchObject, service: PredictionService, *, deadline: Deadline | None = None,
              capture: Callable[[Answer], None] | None = None, part_bytes: int = PART_BYTES) -> BatchResult:
    """Predict every record of `obj` into its output objects, or raise and leave none marked done.

    `capture` gets each model call's :class:`Answer` (the batch function prints its capture lines).
    """
    if exists(s3, obj.bucket, obj.output_key):
        return BatchResult(key=obj.key, skipped=True)
    service.store.get(obj.model)  # an unknown model: refused here, before anything is read
    body = s3.get_object(Bucket=obj.bucket, Key=obj.key)["Body"]
    return predict_stream(s3, obj, body, service, obj.output_key, obj.errors_key, deadline=deadline,
                          capture=capture, part_bytes=part_bytes)


def predict_stream(s3: Any, obj: BatchObject, body: Any, service: PredictionService, output_key: str,
                   errors_key: str, *, first_line: int = 1, header_lines: int = 0, deadline: Deadline | None = None,
                   capture: Callable[[Answer], None] | None = None, part_bytes: int = PART_BYTES) -> BatchResult:
    """Predict the records of `body` (the object, or one chunk of it: see :mod:`ferry.runtime.chunks`) into
    `output_key` and `errors_key`, the predictions completed last; or raise and complete neither."""
    result = BatchResult(key=obj.key)
    deadline = deadline or Deadline()
    service.store.get(obj.model)  # an unknown model, or one that cannot load: refused before anything is read
    max_chars = service.settings.max_input_chars
    lines = Lines(body, max_line_bytes(max_chars), first_line=first_line, header_lines=header_lines)
    reader = READERS[obj.suffix](lines)
    with closing(body), ObjectStream(s3, obj.bucket, output_key, part_bytes) as predictions, \
            ObjectStream(s3, obj.bucket, errors_key, part_bytes) as errors:
        pending: list[Record] = []
        for record in reader:
            if (result.predicted + result.errors + len(pending)) % CHUNK == 0:
                deadline.check(obj, result)
            record = checked(record, max_chars)
            if record.error is not None:
                errors.write(_json_line({"line": record.line, "error": record.error}))
                result.errors += 1
                continue
            pending.append(record)
            if len(pending) == CHUNK:
                result.predicted += _predict(pending, predictions, service, obj, capture)
        if pending:
            deadline.check(obj, result)
            result.predicted += _predict(pending, predictions, service, obj, capture)
        result.records = reader.records
        _check_accounting(obj, result, lines)
        errors.complete(if_empty=False)
        predictions.complete()  # last: its presence means the file (or the chunk) is done
    return result


def _check_accounting(obj: BatchObject, result: BatchResult, lines: Lines) -> None:
    if not lines.exhausted:
        raise BatchIncompleteError(f"{obj.key}: reading stopped at line {lines.count}, before the end of the file")
    if result.predicted + result.errors != result.records:
        raise BatchIncompleteError(
            f"{obj.key}: {result.records} records read but {result.predicted} predicted and {result.errors} "
            f"refused: {result.records - result.predicted - result.errors} unaccounted for; nothing was written")


def _predict(pending: list[Record], out: ObjectStream, service: PredictionService, obj: BatchObject,
             capture: Callable[[Answer], None] | None) -> int:
    texts = [record.text or "" for record in pending]
    version = service.store.get(obj.model).version  # loaded already (predict_stream): a lookup
    ids = [obj.prediction_id(record.line, service.ids, version) for record in pending]
    answer = service.predict(obj.model, texts, prediction_ids=ids, channel=CHANNEL_BATCH)
    if capture is not None:
        capture(answer)
    field = OUTPUT_FIELDS[answer.task]
    for record, prediction_id, output in zip(pending, answer.prediction_ids, answer.payload, strict=True):
        line: dict[str, Any] = {"line": record.line, "prediction_id": prediction_id}
        if record.id is not None:
            line["id"] = record.id
        line[field] = output
        out.write(_json_line(line))
    count = len(pending)
    pending.clear()
    return count


def _json_line(value: dict[str, Any]) -> bytes:
    return (json.dumps(value) + "\n").encode("utf-8")


def exists(s3: Any, bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True
