"""Files too big for one invocation: byte-range chunks predicted apart, then joined in input order.

A file over ``Settings.batch_chunk_bytes`` is planned (:func:`plan`): one pass over its bytes cuts it into
chunks of about that size, each cut right after a newline that ends a record (for CSV, one outside quotes, so a
quoted field that spans lines stays whole), and each chunk knows the number of its first line, so error lines
and prediction ids are the ones the whole file would give. The chunks are independent and idempotent: a chunk
writes its predictions and errors under ``<output>.parts/`` and then a small ``done`` object with its counts, and
a chunk whose ``done`` object is there is not run again. :func:`join` then streams the parts, in order, into the
file's usual outputs, checks that every chunk's records add up and that the lines joined are the lines counted,
and completes the predictions object last, as for a file predicted whole.

In AWS the batch function starts the template's state machine (a Step Functions Distributed Map over the list of
chunks, one invocation of the function per chunk, in parallel, then one to join); locally, and wherever no state
machine is configured, the function runs the same chunks in order, in process (:func:`run_in_process`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from ferry.runtime.batch import (
    PART_BYTES,
    READ_BYTES,
    BatchObject,
    BatchResult,
    Deadline,
    ObjectStream,
    exists,
    predict_stream,
)
from ferry.runtime.exceptions import BatchIncompleteError
from ferry.runtime.service import Answer, PredictionService

CSV_SUFFIX = ".csv"


@dataclass(frozen=True)
class Chunk:
    """Bytes ``[start, end)`` of a file, whose first line is line `first_line` of the file."""

    index: int
    start: int
    end: int
    first_line: int


@dataclass(frozen=True)
class Plan:
    """How a file is cut. For CSV, `header_end` bytes (`header_lines` lines) hold the header record, which every
    chunk but the first is read after; for JSONL both are 0."""

    size: int
    header_end: int
    header_lines: int
    chunks: tuple[Chunk, ...]


def plan(stream: Any, size: int, chunk_bytes: int, *, csv: bool, block: int = READ_BYTES) -> Plan:
    """Cut the `size` bytes of `stream` into chunks of at least `chunk_bytes` (the last may be shorter), each
    ending with the newline that ends a record. One pass, a block at a time."""
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes={chunk_bytes} must be positive")
    cutter = _Cutter(size, chunk_bytes, csv)
    while data := stream.read(block):
        cutter.feed(data)
    if cutter.position != size:
        raise BatchIncompleteError(f"planning read {cutter.position} bytes of an object of {size}")
    header_end, header_lines = cutter.header if cutter.header is not None else (size, cutter.newlines + 1)
    ends = [offset for offset, _ in cutter.starts[1:]] + [size]
    chunks = tuple(Chunk(index, start, end, line)
                   for index, ((start, line), end) in enumerate(zip(cutter.starts, ends, strict=True)))
    return Plan(size, header_end if csv else 0, header_lines if csv else 0, chunks)


class _Cutter:
    """The state of :func:`plan`'s pass: bytes, newlines and (CSV) quotes seen, the cuts made. Python looks at
    single newlines only near a cut, and for CSV until the header ends; elsewhere it counts whole blocks."""

    def __init__(self, size: int, chunk_bytes: int, csv: bool):
        self.size, self.chunk_bytes, self.csv = size, chunk_bytes, csv
        self.starts = [(0, 1)]  # (offset, first line) of each chunk
        self.target = chunk_bytes  # the next cut is at the first record end at or past this offset
        self.position = self.newlines = self.quotes = 0
        self.header: tuple[int, int] | None = None if csv else (0, 0)  # (bytes, lines) of the CSV header

    def _count(self, data: bytes, start: int, end: int | None = None) -> None:
        self.newlines += data.count(b"\n", start, end)
        if self.csv:
            self.quotes += data.count(b'"', start, end)

    def feed(self, data: bytes) -> None:
        index = 0
        while index < len(data):
            skip = self.target - 1 - self.position  # the byte before the target, in this block's indices
            if self.header is not None and skip >= len(data):  # no cut to find in the rest of this block
                self._count(data, index)
                break
            if self.header is not None and index < skip:
                self._count(data, index, skip)
                index = skip
            newline = data.find(b"\n", index)
            if newline < 0:
                self._count(data, index)
                break
            self._count(data, index, newline + 1)
            index = newline + 1
            self._record_end(self.position + index)
        self.position += len(data)

    def _record_end(self, after: int) -> None:
        """A newline ends at `after`: a record ends there unless it is inside a quoted CSV field."""
        if self.quotes % 2:
            return
        if self.header is None:
            self.header = (after, self.newlines)
        elif self.target <= after < self.size:
            self.starts.append((after, self.newlines + 1))
            self.target = after + self.chunk_bytes


# -- the parts of a chunked file --------------------------------------------------------------------------------

def parts_prefix(obj: BatchObject) -> str:
    return obj.outputs.parts


def _part(obj: BatchObject, index: int, what: str) -> str:
    return f"{parts_prefix(obj)}{index:05d}.{what}"


def item_of(obj: BatchObject, file_plan: Plan, chunk: Chunk) -> dict[str, Any]:
    """One chunk as the state machine hands it to the function: everything needed, JSON only."""
    return {"object": asdict(obj), "chunk": asdict(chunk), "header_end": file_plan.header_end,
            "header_lines": file_plan.header_lines}


def _object(value: dict[str, Any]) -> BatchObject:
    return BatchObject(**{field: str(value[field]) for field in ("bucket", "key", "etag", "model", "name", "suffix")})


class _Ranges:
    """A readable stream of byte ranges of one S3 object, one after the other (a CSV chunk after the header)."""

    def __init__(self, s3: Any, bucket: str, key: str, ranges: list[tuple[int, int]]):
        self._bodies: Iterator[Any] = (s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}")["Body"]
                                       for start, end in ranges if end > start)
        self._body: Any = next(self._bodies, None)

    def read(self, size: int = -1) -> bytes:
        while self._body is not None:
            data = self._body.read(size)
            if data:
                return bytes(data)
            self._body.close()
            self._body = next(self._bodies, None)
        return b""

    def close(self) -> None:
        if self._body is not None:
            self._body.close()


def run_chunk(s3: Any, item: dict[str, Any], service: PredictionService, *, deadline: Deadline | None = None,
              capture: Callable[[Answer], None] | None = None, part_bytes: int = PART_BYTES) -> BatchResult:
    """Predict one chunk into its parts; a chunk already done is not run again (its counts are returned)."""
    obj, chunk = _object(item["object"]), Chunk(**item["chunk"])
    done_key = _part(obj, chunk.index, "done.json")
    if exists(s3, obj.bucket, done_key):
        counts = _counts(s3, obj, done_key)
        return BatchResult(key=obj.key, records=counts["records"], predicted=counts["predicted"],
                           errors=counts["errors"], skipped=True)
    ranges = [(chunk.start, chunk.end)]
    header_lines = 0
    if obj.suffix == CSV_SUFFIX and chunk.index > 0:
        ranges.insert(0, (0, int(item["header_end"])))
        header_lines = int(item["header_lines"])
    body = _Ranges(s3, obj.bucket, obj.key, ranges)
    result = predict_stream(s3, obj, body, service, _part(obj, chunk.index, "predictions.jsonl"),
                            _part(obj, chunk.index, "errors.jsonl"), first_line=chunk.first_line,
                            header_lines=header_lines, deadline=deadline, capture=capture, part_bytes=part_bytes)
    counts = {"records": result.records, "predicted": result.predicted, "errors": result.errors}
    s3.put_object(Bucket=obj.bucket, Key=done_key, Body=json.dumps(counts).encode(), ContentType="application/json")
    return result


def _counts(s3: Any, obj: BatchObject, done_key: str) -> dict[str, int]:
    counts = json.loads(s3.get_object(Bucket=obj.bucket, Key=done_key)["Body"].read())
    return {name: int(counts[name]) for name in ("records", "predicted", "errors")}


def join(s3: Any, join_input: dict[str, Any], *, part_bytes: int = PART_BYTES) -> BatchResult:
    """Stream every chunk's parts, in order, into the file's outputs (predictions completed last), once all the
    chunks are done and their records add up; then delete the parts."""
    obj, count = _object(join_input["object"]), int(join_input["chunks"])
    if exists(s3, obj.bucket, obj.output_key):
        return BatchResult(key=obj.key, skipped=True)
    result = BatchResult(key=obj.key)
    for index in range(count):
        done_key = _part(obj, index, "done.json")
        if not exists(s3, obj.bucket, done_key):
            raise BatchIncompleteError(f"{obj.key}: chunk {index + 1} of {count} is not done; nothing was joined")
        counts = _counts(s3, obj, done_key)
        result.records += counts["records"]
        result.predicted += counts["predicted"]
        result.errors += counts["errors"]
    with ObjectStream(s3, obj.bucket, obj.output_key, part_bytes) as predictions, \
            ObjectStream(s3, obj.bucket, obj.errors_key, part_bytes) as errors:
        joined = {"predictions": 0, "errors": 0}
        for index in range(count):
            joined["predictions"] += _copy(s3, obj, _part(obj, index, "predictions.jsonl"), predictions)
            joined["errors"] += _copy(s3, obj, _part(obj, index, "errors.jsonl"), errors)
        if (joined["predictions"], joined["errors"]) != (result.predicted, result.errors) or \
                result.predicted + result.errors != result.records:
            raise BatchIncompleteError(
                f"{obj.key}: the chunks counted {result.records} records, {result.predicted} predicted and "
                f"{result.errors} refused, but their parts hold {joined['predictions']} predictions and "
                f"{joined['errors']} error lines; nothing was joined")
        errors.complete(if_empty=False)
        predictions.complete()  # last: its presence means the file is done
    _delete_parts(s3, obj, count)
    return result


def _copy(s3: Any, obj: BatchObject, key: str, out: ObjectStream) -> int:
    """Append the part `key` (absent: an errors part of a chunk without errors) to `out`; its lines."""
    if not exists(s3, obj.bucket, key):
        return 0
    body = s3.get_object(Bucket=obj.bucket, Key=key)["Body"]
    lines = 0
    try:
        while data := body.read(READ_BYTES):
            lines += data.count(b"\n")
            out.write(data)
    finally:
        body.close()
    return lines


def _delete_parts(s3: Any, obj: BatchObject, count: int) -> None:
    keys = [_part(obj, index, what) for index in range(count)
            for what in ("predictions.jsonl", "errors.jsonl", "done.json")] + [parts_prefix(obj) + "chunks.json"]
    for start in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=obj.bucket, Delete={"Objects": [{"Key": key} for key in keys[start:start + 1000]],
                                                     "Quiet": True})


# -- starting the chunks ----------------------------------------------------------------------------------------

def plan_object(s3: Any, obj: BatchObject, size: int, chunk_bytes: int) -> Plan:
    body = s3.get_object(Bucket=obj.bucket, Key=obj.key)["Body"]
    try:
        return plan(body, size, chunk_bytes, csv=obj.suffix == CSV_SUFFIX)
    finally:
        body.close()


def execution_name(obj: BatchObject) -> str:
    """The same name for the same object and version: a redelivered event cannot start a second execution."""
    return hashlib.sha256(f"{obj.key}\n{obj.etag}".encode()).hexdigest()[:64]


def start_state_machine(s3: Any, stepfunctions: Any, state_machine: str, obj: BatchObject, file_plan: Plan) -> str:
    """Write the chunk list where the Distributed Map reads it, and start the execution (once per object)."""
    chunks_key = parts_prefix(obj) + "chunks.json"
    items = [item_of(obj, file_plan, chunk) for chunk in file_plan.chunks]
    s3.put_object(Bucket=obj.bucket, Key=chunks_key, Body=json.dumps(items).encode(), ContentType="application/json")
    execution = {"bucket": obj.bucket, "chunks_key": chunks_key, "object": asdict(obj), "chunks": len(items)}
    try:
        answer = stepfunctions.start_execution(stateMachineArn=state_machine, name=execution_name(obj),
                                               input=json.dumps(execution))
    except stepfunctions.exceptions.ExecutionAlreadyExists:
        return f"{state_machine.replace(':stateMachine:', ':execution:')}:{execution_name(obj)}"
    return str(answer["executionArn"])


def run_in_process(s3: Any, obj: BatchObject, file_plan: Plan, service: PredictionService, *,
                   deadline: Deadline | None = None, capture: Callable[[Answer], None] | None = None,
                   part_bytes: int = PART_BYTES) -> BatchResult:
    """What the state machine does, in order, here: every chunk, then the join."""
    for chunk in file_plan.chunks:
        run_chunk(s3, item_of(obj, file_plan, chunk), service, deadline=deadline, capture=capture,
                  part_bytes=part_bytes)
    return join(s3, {"object": asdict(obj), "chunks": len(file_plan.chunks)}, part_bytes=part_bytes)


def run_file(s3: Any, obj: BatchObject, service: PredictionService, *, chunk_bytes: int,
             start: Callable[[BatchObject, Plan], str] | None = None, deadline: Deadline | None = None,
             capture: Callable[[Answer], None] | None = None, part_bytes: int = PART_BYTES) -> BatchResult:
    """A dropped file, whatever its size: predicted whole when it is at most `chunk_bytes`; otherwise planned
    and handed to `start` (which starts the state machine and names the execution), or, without one, its chunks
    run here in order and joined."""
    if exists(s3, obj.bucket, obj.output_key):
        return BatchResult(key=obj.key, skipped=True)
    service.store.get(obj.model)  # an unknown model: refused before anything is read or planned
    size = int(s3.head_object(Bucket=obj.bucket, Key=obj.key)["ContentLength"])
    if size <= chunk_bytes:  # what run_batch does, less the checks just made
        body = s3.get_object(Bucket=obj.bucket, Key=obj.key)["Body"]
        return predict_stream(s3, obj, body, service, obj.output_key, obj.errors_key, deadline=deadline,
                              capture=capture, part_bytes=part_bytes)
    file_plan = plan_object(s3, obj, size, chunk_bytes)
    if start is not None:
        return BatchResult(key=obj.key, chunks=len(file_plan.chunks), execution=start(obj, file_plan))
    result = run_in_process(s3, obj, file_plan, service, deadline=deadline, capture=capture, part_bytes=part_bytes)
    result.chunks = len(file_plan.chunks)
    return result
