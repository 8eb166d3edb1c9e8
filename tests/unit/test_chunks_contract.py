"""A file too big for one invocation, end to end without a model: how it is planned, what each chunk writes and
how it is not run twice, how the join checks the counts and cleans up, and how the state machine is started.
S3 is moto; the model a stand-in service; Step Functions a recording stand-in."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict
from types import SimpleNamespace
from typing import Any

import pytest

from ferry.runtime.batch import BatchIncompleteError, BatchObject, BatchResult, exists
from ferry.runtime.chunks import (
    Chunk,
    Plan,
    _delete_parts,
    _object,
    _Ranges,
    execution_name,
    item_of,
    join,
    parts_prefix,
    plan,
    plan_object,
    run_chunk,
    run_file,
    run_in_process,
    start_state_machine,
)
from ferry.runtime.exceptions import ModelNotFoundError
from ferry.runtime.ids import PredictionIds
from ferry.runtime.service import Answer

from helpers import mocked_s3

BUCKET = "ferry-batch"

IDS, VERSION = PredictionIds(None), "0123456789ab"  # the stand-in service's ids and its model's version


def pid(obj: BatchObject, line: int) -> str:
    """The id a record of `obj` gets from the stand-in service."""
    return obj.prediction_id(line, IDS, VERSION)


class Store:
    def get(self, model: str) -> object:
        if model != "sentiment":
            raise ModelNotFoundError(f"no model named {model!r}")
        return SimpleNamespace(version=VERSION)  # what _predict reads of a predictor


class Service:
    def __init__(self) -> None:
        self.ids = IDS
        self.settings = SimpleNamespace(max_input_chars=50)
        self.store = Store()
        self.calls: list[list[str]] = []

    def predict(self, model: str, texts: list[str], *, prediction_ids: list[str], channel: str) -> Answer:
        self.calls.append(list(texts))
        return Answer(payload=[[{"label": "n", "score": len(text)}] for text in texts],
                      prediction_ids=list(prediction_ids), captures=[], model=model, version="v1", latency_ms=1.0,
                      task="text-classification")


@pytest.fixture()
def s3(monkeypatch):
    yield from mocked_s3(monkeypatch, BUCKET)


def dropped(s3: Any, name: str, data: bytes, model: str = "sentiment") -> BatchObject:
    key = f"input/{model}/{name}"
    s3.put_object(Bucket=BUCKET, Key=key, Body=data)
    stem, suffix = name.rsplit(".", 1)
    return BatchObject(BUCKET, key, "v1", model, stem, "." + suffix)


def body(s3: Any, key: str) -> bytes | None:
    return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() if exists(s3, BUCKET, key) else None


def keys(s3: Any) -> list[str]:
    return sorted(item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []))


JSONL = b"".join(json.dumps({"text": f"record {index}"}).encode() + b"\n" for index in range(1, 7))  # 6 lines
CSV = b'id,text\n1,one\n2,"two\nlines"\n3,three\n4,\n5,five\n'


# -- planning --------------------------------------------------------------------------------------------------------

def test_a_jsonl_plan_cuts_after_every_line_when_asked_for_one_byte_chunks():
    data = b"a\nbb\nccc\n"
    cut = plan(io.BytesIO(data), len(data), 1, csv=False, block=4)
    assert cut == Plan(size=9, header_end=0, header_lines=0, chunks=(
        Chunk(0, 0, 2, 1), Chunk(1, 2, 5, 2), Chunk(2, 5, 9, 3)))


def test_a_csv_without_a_line_end_is_all_header():
    cut = plan(io.BytesIO(b"text"), 4, 2, csv=True)
    assert cut == Plan(size=4, header_end=4, header_lines=1, chunks=(Chunk(0, 0, 4, 1),))


def test_a_plan_refuses_a_chunk_size_under_one_byte_and_a_short_read():
    assert len(plan(io.BytesIO(b"x\n"), 2, 1, csv=False).chunks) == 1
    with pytest.raises(ValueError, match=r"^chunk_bytes=0 must be positive$"):
        plan(io.BytesIO(b"x\n"), 2, 0, csv=False)
    with pytest.raises(BatchIncompleteError) as caught:
        plan(io.BytesIO(b"x\ny\n"), 5, 1, csv=False)
    assert str(caught.value) == "planning read 4 bytes of an object of 5"


def test_a_plan_of_an_object_is_the_plan_of_its_bytes(s3):
    obj = dropped(s3, "rows.csv", CSV)
    assert plan_object(s3, obj, len(CSV), 10) == plan(io.BytesIO(CSV), len(CSV), 10, csv=True)
    jsonl = dropped(s3, "rows.jsonl", JSONL)
    assert plan_object(s3, jsonl, len(JSONL), 10) == plan(io.BytesIO(JSONL), len(JSONL), 10, csv=False)


# -- the chunk as the state machine hands it -------------------------------------------------------------------------

def test_a_chunk_item_is_plain_json_and_gives_back_its_object():
    obj = BatchObject(BUCKET, "input/sentiment/f.csv", "e1", "sentiment", "f", ".csv")
    cut = Plan(size=100, header_end=8, header_lines=1, chunks=(Chunk(0, 0, 50, 1), Chunk(1, 50, 100, 6)))
    item = item_of(obj, cut, cut.chunks[1])
    assert item == {"object": asdict(obj), "chunk": {"index": 1, "start": 50, "end": 100, "first_line": 6},
                    "header_end": 8, "header_lines": 1}
    assert _object(json.loads(json.dumps(item))["object"]) == obj
    assert _object({**asdict(obj), "etag": 123}).etag == "123"


def test_the_execution_name_is_fixed_by_the_object_and_its_version():
    obj = BatchObject(BUCKET, "input/sentiment/f.csv", "e1", "sentiment", "f", ".csv")
    assert execution_name(obj) == hashlib.sha256(b"input/sentiment/f.csv\ne1").hexdigest()


class _Body:
    def __init__(self, data: bytes, closed: list[bytes]):
        self.stream, self.data, self.closed = io.BytesIO(data), data, closed

    def read(self, size: int = -1) -> bytes:
        return self.stream.read(size)

    def close(self) -> None:
        self.closed.append(self.data)


class _RangeS3:
    def __init__(self, data: bytes):
        self.data, self.ranges, self.closed = data, [], []

    def get_object(self, Bucket: str, Key: str, Range: str) -> dict[str, Any]:
        self.ranges.append(Range)
        start, end = (int(part) for part in Range.removeprefix("bytes=").split("-"))
        return {"Body": _Body(self.data[start:end + 1], self.closed)}


def test_ranges_are_read_one_after_the_other_and_empty_ones_skipped():
    s3 = _RangeS3(b"0123456789")
    ranges = _Ranges(s3, BUCKET, "k", [(0, 3), (5, 5), (6, 10)])
    assert ranges.read(2) == b"01"
    assert ranges.read(100) == b"2"
    assert ranges.read(100) == b"6789"
    assert ranges.read(100) == b""
    assert s3.ranges == ["bytes=0-2", "bytes=6-9"] and s3.closed == [b"012", b"6789"]
    open_one = _Ranges(s3, BUCKET, "k", [(0, 4)])
    open_one.close()
    assert s3.closed[-1] == b"0123"
    _Ranges(s3, BUCKET, "k", []).close()  # nothing to close


# -- running chunks and joining them ---------------------------------------------------------------------------------

def test_a_csv_file_in_chunks_gives_the_outputs_of_the_whole_file_and_leaves_no_part(s3):
    obj = dropped(s3, "rows.csv", CSV)
    cut = plan(io.BytesIO(CSV), len(CSV), 12, csv=True)
    assert len(cut.chunks) == 3
    service = Service()
    results = [run_chunk(s3, item_of(obj, cut, chunk), service) for chunk in cut.chunks]
    assert [(r.records, r.predicted, r.errors) for r in results] == [(1, 1, 0), (1, 1, 0), (3, 2, 1)]
    prefix = parts_prefix(obj)
    assert prefix == "output/sentiment/rows.v1.parts/"
    assert json.loads(body(s3, f"{prefix}00002.done.json")) == {"records": 3, "predicted": 2, "errors": 1}
    assert s3.head_object(Bucket=BUCKET, Key=f"{prefix}00002.done.json")["ContentType"] == "application/json"
    assert body(s3, f"{prefix}00000.errors.jsonl") is None  # a chunk without errors writes no errors part
    joined = join(s3, {"object": asdict(obj), "chunks": 3})
    assert joined == BatchResult(key=obj.key, records=5, predicted=4, errors=1)
    predictions = [json.loads(line) for line in body(s3, obj.output_key).splitlines()]
    assert [(line["line"], line["id"], line["prediction_id"]) for line in predictions] == [
        (2, "1", pid(obj, 2)), (3, "2", pid(obj, 3)), (5, "3", pid(obj, 5)),
        (7, "5", pid(obj, 7))]
    assert [json.loads(line) for line in body(s3, obj.errors_key).splitlines()] == [
        {"line": 6, "error": "the text is empty"}]
    assert keys(s3) == sorted([obj.key, obj.output_key, obj.errors_key])


def test_a_chunk_already_done_is_not_run_again(s3):
    obj = dropped(s3, "rows.jsonl", JSONL)
    cut = plan(io.BytesIO(JSONL), len(JSONL), 40, csv=False)
    item = item_of(obj, cut, cut.chunks[1])
    service = Service()
    first = run_chunk(s3, item, service)
    again = run_chunk(s3, item, service)
    assert again == BatchResult(key=obj.key, records=first.records, predicted=first.predicted, errors=0, skipped=True)
    assert len(service.calls) == 1


def test_the_join_waits_for_every_chunk_and_checks_their_counts(s3):
    obj = dropped(s3, "rows.jsonl", JSONL)
    cut = plan(io.BytesIO(JSONL), len(JSONL), 40, csv=False)
    assert len(cut.chunks) == 3
    run_chunk(s3, item_of(obj, cut, cut.chunks[0]), Service())
    with pytest.raises(BatchIncompleteError) as caught:
        join(s3, {"object": asdict(obj), "chunks": 3})
    assert str(caught.value) == f"{obj.key}: chunk 2 of 3 is not done; nothing was joined"
    for chunk in cut.chunks[1:]:
        run_chunk(s3, item_of(obj, cut, chunk), Service())
    done = f"{parts_prefix(obj)}00002.done.json"
    s3.put_object(Bucket=BUCKET, Key=done, Body=json.dumps({"records": 3, "predicted": 3, "errors": 0}).encode())
    with pytest.raises(BatchIncompleteError) as caught:
        join(s3, {"object": asdict(obj), "chunks": 3})
    assert str(caught.value) == (f"{obj.key}: the chunks counted 7 records, 7 predicted and 0 refused, but their "
                                 "parts hold 6 predictions and 0 error lines; nothing was joined")
    assert not exists(s3, BUCKET, obj.output_key)
    s3.put_object(Bucket=BUCKET, Key=done, Body=json.dumps({"records": 3, "predicted": 2, "errors": 0}).encode())
    with pytest.raises(BatchIncompleteError, match="the chunks counted 7 records, 6 predicted and 0 refused"):
        join(s3, {"object": asdict(obj), "chunks": 3})
    s3.put_object(Bucket=BUCKET, Key=done, Body=json.dumps({"records": 2, "predicted": 2, "errors": 0}).encode())
    assert join(s3, {"object": asdict(obj), "chunks": 3}) == BatchResult(key=obj.key, records=6, predicted=6)
    assert join(s3, {"object": asdict(obj), "chunks": 3}) == BatchResult(key=obj.key, skipped=True)


class _Deletes:
    def __init__(self) -> None:
        self.batches: list[dict[str, Any]] = []

    def delete_objects(self, Bucket: str, Delete: dict[str, Any]) -> None:
        assert Bucket == BUCKET
        self.batches.append(Delete)


def test_parts_are_deleted_a_thousand_keys_at_a_time():
    obj = BatchObject(BUCKET, "input/sentiment/f.jsonl", "e1", "sentiment", "f", ".jsonl")
    s3 = _Deletes()
    _delete_parts(s3, obj, 334)  # 3 parts a chunk and the chunk list: 1003 keys
    assert [len(batch["Objects"]) for batch in s3.batches] == [1000, 3]
    assert all(batch["Quiet"] is True for batch in s3.batches)
    prefix = parts_prefix(obj)
    assert s3.batches[0]["Objects"][:4] == [{"Key": f"{prefix}00000.predictions.jsonl"},
                                            {"Key": f"{prefix}00000.errors.jsonl"},
                                            {"Key": f"{prefix}00000.done.json"},
                                            {"Key": f"{prefix}00001.predictions.jsonl"}]
    assert s3.batches[1]["Objects"] == [{"Key": f"{prefix}00333.errors.jsonl"}, {"Key": f"{prefix}00333.done.json"},
                                        {"Key": f"{prefix}chunks.json"}]


# -- starting --------------------------------------------------------------------------------------------------------

class _StepFunctions:
    class exceptions:
        class ExecutionAlreadyExists(Exception):
            pass

    def __init__(self, exists_already: bool = False):
        self.started: list[dict[str, Any]] = []
        self.exists_already = exists_already

    def start_execution(self, **kwargs: Any) -> dict[str, Any]:
        self.started.append(kwargs)
        if self.exists_already:
            raise self.exceptions.ExecutionAlreadyExists("already")
        return {"executionArn": "arn:aws:states:us-east-1:1:execution:batch:run-1"}


MACHINE = "arn:aws:states:us-east-1:1:stateMachine:batch"


def test_the_state_machine_is_started_once_per_object_with_its_chunk_list(s3):
    obj = dropped(s3, "rows.jsonl", JSONL)
    cut = plan(io.BytesIO(JSONL), len(JSONL), 40, csv=False)
    functions = _StepFunctions()
    assert start_state_machine(s3, functions, MACHINE, obj, cut) == "arn:aws:states:us-east-1:1:execution:batch:run-1"
    chunks_key = f"{parts_prefix(obj)}chunks.json"
    assert json.loads(body(s3, chunks_key)) == [item_of(obj, cut, chunk) for chunk in cut.chunks]
    assert s3.head_object(Bucket=BUCKET, Key=chunks_key)["ContentType"] == "application/json"
    (started,) = functions.started
    assert started["stateMachineArn"] == MACHINE and started["name"] == execution_name(obj)
    assert json.loads(started["input"]) == {"bucket": BUCKET, "chunks_key": chunks_key, "object": asdict(obj),
                                            "chunks": 3}
    again = start_state_machine(s3, _StepFunctions(exists_already=True), MACHINE, obj, cut)
    assert again == f"arn:aws:states:us-east-1:1:execution:batch:{execution_name(obj)}"


def test_a_small_file_is_predicted_whole_and_a_large_one_in_chunks(s3):
    small = dropped(s3, "small.jsonl", JSONL)
    service = Service()
    whole = run_file(s3, small, service, chunk_bytes=len(JSONL))  # exactly the chunk size: whole
    assert whole == BatchResult(key=small.key, records=6, predicted=6)
    assert keys(s3) == sorted([small.key, small.output_key]) and len(service.calls) == 1
    assert run_file(s3, small, service, chunk_bytes=1) == BatchResult(key=small.key, skipped=True)

    large = dropped(s3, "large.jsonl", JSONL)
    chunked = run_file(s3, large, Service(), chunk_bytes=40)
    assert chunked == BatchResult(key=large.key, records=6, predicted=6, chunks=3)
    assert [json.loads(line)["line"] for line in body(s3, large.output_key).splitlines()] == [1, 2, 3, 4, 5, 6]
    assert not [key for key in keys(s3) if ".parts/" in key]


def test_a_large_file_is_handed_to_the_state_machine_when_there_is_one(s3):
    obj = dropped(s3, "large.jsonl", JSONL)
    handed: list[tuple[BatchObject, Plan]] = []

    def start(started: BatchObject, file_plan: Plan) -> str:
        handed.append((started, file_plan))
        return "arn:execution"

    result = run_file(s3, obj, Service(), chunk_bytes=40, start=start)
    assert result == BatchResult(key=obj.key, chunks=3, execution="arn:execution")
    assert handed == [(obj, plan(io.BytesIO(JSONL), len(JSONL), 40, csv=False))]
    assert not exists(s3, BUCKET, obj.output_key)


def test_run_in_process_runs_every_chunk_then_the_join(s3):
    obj = dropped(s3, "rows.csv", CSV)
    cut = plan(io.BytesIO(CSV), len(CSV), 12, csv=True)
    service = Service()
    result = run_in_process(s3, obj, cut, service)
    assert result == BatchResult(key=obj.key, records=5, predicted=4, errors=1)
    assert service.calls == [["one"], ["two\nlines"], ["three", "five"]]


def test_an_unknown_model_is_refused_before_the_file_is_looked_at():
    class Untouched:
        def head_object(self, **kwargs: Any) -> None:
            raise AssertionError("the object was looked at")

    class NoOutput(Untouched):
        def head_object(self, **kwargs: Any) -> None:
            if kwargs["Key"].startswith("output/"):
                from botocore.exceptions import ClientError

                raise ClientError({"Error": {"Code": "404"}}, "HeadObject")
            super().head_object(**kwargs)

    obj = BatchObject(BUCKET, "input/nobody/f.jsonl", "e1", "nobody", "f", ".jsonl")
    with pytest.raises(ModelNotFoundError):
        run_file(NoOutput(), obj, Service(), chunk_bytes=10)


# -- what is passed down ---------------------------------------------------------------------------------------------

JSONL_WITH_ERRORS = b"".join(
    (b"not json\n" if index % 3 == 0 else json.dumps({"text": f"record {index}"}).encode() + b"\n")
    for index in range(1, 10))  # refused: lines 3, 6, 9


def test_refused_records_of_every_chunk_are_counted_joined_and_kept_by_a_rerun(s3, monkeypatch):
    monkeypatch.setattr("ferry.runtime.chunks.READ_BYTES", 16)  # parts copied 16 bytes at a time
    obj = dropped(s3, "errors.jsonl", JSONL_WITH_ERRORS)
    cut = plan(io.BytesIO(JSONL_WITH_ERRORS), len(JSONL_WITH_ERRORS), 51, csv=False)
    assert len(cut.chunks) == 3
    first = [run_chunk(s3, item_of(obj, cut, chunk), Service()) for chunk in cut.chunks]
    assert [result.errors for result in first] == [1, 1, 1]
    again = run_chunk(s3, item_of(obj, cut, cut.chunks[1]), Service())
    assert (again.records, again.predicted, again.errors, again.skipped) == (3, 2, 1, True)
    joined = join(s3, {"object": asdict(obj), "chunks": 3})
    assert joined == BatchResult(key=obj.key, records=9, predicted=6, errors=3)
    assert [json.loads(line)["line"] for line in body(s3, obj.errors_key).splitlines()] == [3, 6, 9]
    assert len(body(s3, obj.output_key).splitlines()) == 6


def test_a_join_without_refused_records_makes_no_errors_object(s3):
    obj = dropped(s3, "clean.jsonl", JSONL)
    cut = plan(io.BytesIO(JSONL), len(JSONL), 40, csv=False)
    assert run_in_process(s3, obj, cut, Service()) == BatchResult(key=obj.key, records=6, predicted=6)
    assert not exists(s3, BUCKET, obj.errors_key)


class _Late:
    """A deadline already past: the first check stops the file."""

    def __init__(self) -> None:
        self.remaining_ms = lambda: 0
        self.margin_ms = 1

    def check(self, obj: BatchObject, result: BatchResult) -> None:
        raise BatchIncompleteError(f"{obj.key}: late")


@pytest.mark.parametrize("chunk_bytes", [10_000, 40], ids=["whole", "in chunks"])
def test_the_deadline_the_capture_and_the_part_size_reach_every_prediction(s3, chunk_bytes):
    obj = dropped(s3, "passed.jsonl", JSONL_WITH_ERRORS)
    with pytest.raises(BatchIncompleteError, match="late"):
        run_file(s3, obj, Service(), chunk_bytes=chunk_bytes, deadline=_Late())
    with pytest.raises(ValueError, match="S3 takes parts of"):
        run_file(s3, obj, Service(), chunk_bytes=chunk_bytes, part_bytes=1024)
    answers: list[Answer] = []
    result = run_file(s3, obj, Service(), chunk_bytes=chunk_bytes, capture=answers.append)
    assert (result.records, result.predicted, result.errors) == (9, 6, 3)
    assert sum(len(answer.prediction_ids) for answer in answers) == 6
    assert [json.loads(line)["line"] for line in body(s3, obj.errors_key).splitlines()] == [3, 6, 9]


def test_the_join_writes_both_outputs_in_parts_of_the_size_given(s3):
    from ferry.runtime.batch import MIN_PART_BYTES

    obj = dropped(s3, "big.jsonl", b"")
    prefix = parts_prefix(obj)
    line = b'{"line": 1, "error": "not valid JSON: Expecting value: line 1 column 1 (char 0)"}\n'
    errors = line * (3 * 1024 * 1024 // len(line))  # 3 MiB a chunk: 6 MiB in all
    count = errors.count(b"\n")
    for index in range(2):
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}{index:05d}.predictions.jsonl", Body=errors[:-1] + b"\n")
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}{index:05d}.errors.jsonl", Body=errors)
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}{index:05d}.done.json",
                      Body=json.dumps({"records": 2 * count, "predicted": count, "errors": count}).encode())
    with pytest.raises(ValueError, match="S3 takes parts of"):
        join(s3, {"object": asdict(obj), "chunks": 2}, part_bytes=MIN_PART_BYTES - 1)
    join(s3, {"object": asdict(obj), "chunks": 2}, part_bytes=MIN_PART_BYTES)
    for key in (obj.output_key, obj.errors_key):  # a multipart upload each, not one put
        assert "-" in s3.head_object(Bucket=BUCKET, Key=key)["ETag"]


def test_run_in_process_joins_with_the_part_size_given(s3):
    obj = dropped(s3, "done.jsonl", JSONL)
    cut = plan(io.BytesIO(JSONL), len(JSONL), 40, csv=False)
    for chunk in cut.chunks:
        run_chunk(s3, item_of(obj, cut, chunk), Service())  # every chunk done: only the join is left
    with pytest.raises(ValueError, match="S3 takes parts of"):
        run_in_process(s3, obj, cut, Service(), part_bytes=1024)
