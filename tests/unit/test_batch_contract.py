"""The batch function's contract to the letter, without a model: which S3 events are files to predict, how records
are read at their limits, what the output objects hold line for line, how the upload is made and undone, and when
a file is refused as incomplete. The model is a stand-in service; S3 is moto, or a recording stand-in where the
calls themselves are the contract."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError

from ferry.runtime import batch
from ferry.runtime.batch import (
    CHUNK,
    MIN_PART_BYTES,
    SAFETY_MARGIN_MS,
    BatchIncompleteError,
    BatchInputError,
    BatchObject,
    BatchResult,
    CsvRecords,
    Deadline,
    JsonlRecords,
    Lines,
    ObjectStream,
    Record,
    checked,
    exists,
    objects_of,
    predict_stream,
    run_batch,
)
from ferry.runtime.exceptions import ModelNotFoundError
from ferry.runtime.ids import PredictionIds
from ferry.runtime.service import Answer

from helpers import mocked_s3

BUCKET = "ferry-batch"


# -- which events are files to predict ------------------------------------------------------------------------

def s3_event(key: str, **object_fields: Any) -> dict[str, Any]:
    return {"Records": [{"s3": {"bucket": {"name": BUCKET}, "object": {"key": key, **object_fields}}}]}


def test_an_input_file_becomes_a_batch_object_with_its_version():
    (obj,) = objects_of(s3_event("input/sentiment/my+file%C3%A9.jsonl", eTag='"abcX"', sequencer="00"))
    assert obj == BatchObject(bucket=BUCKET, key="input/sentiment/my fileé.jsonl", etag="abcX", model="sentiment",
                              name="my fileé", suffix=".jsonl")
    (csv_obj,) = objects_of(s3_event("input/minilm/rows.csv", sequencer="0055AED6DCD90281E5"))
    assert (csv_obj.etag, csv_obj.suffix, csv_obj.model) == ("0055AED6DCD90281E5", ".csv", "minilm")
    (unversioned,) = objects_of(s3_event("input/minilm/rows.csv"))
    assert unversioned.etag == "noetag"
    assert list(objects_of({})) == [] and list(objects_of({"Records": None})) == []


@pytest.mark.parametrize(("event", "message"), [
    (s3_event("input/sentiment/sub/file.jsonl"),
     "s3 key 'input/sentiment/sub/file.jsonl': batch inputs go to input/<model>/<file>.jsonl or .csv"),
    (s3_event("output/sentiment/file.jsonl"),
     "s3 key 'output/sentiment/file.jsonl': batch inputs go to input/<model>/<file>.jsonl or .csv"),
    ({"Records": [{"s3": {"bucket": {"name": BUCKET}}}]},
     "s3 key '': batch inputs go to input/<model>/<file>.jsonl or .csv"),
    ({"Records": [{"s3": {"bucket": {"name": BUCKET}, "object": {}}}]},
     "s3 key '': batch inputs go to input/<model>/<file>.jsonl or .csv"),
    (s3_event("input/sentiment/file.txt"),
     "s3 key 'input/sentiment/file.txt': unknown format '.txt'; use .jsonl or .csv"),
])
def test_what_is_not_a_batch_input_is_refused_saying_where_inputs_go(event, message):
    with pytest.raises(BatchInputError) as caught:
        list(objects_of(event))
    assert str(caught.value) == message


def test_a_record_s_prediction_id_derives_from_the_key_the_version_and_the_line():
    obj = BatchObject(BUCKET, "input/m/f.jsonl", "e1", "m", "f", ".jsonl")
    nonce = hashlib.sha256(b"input/m/f.jsonl\ne1\n7").hexdigest()[:20]
    assert obj.prediction_nonce(7) == nonce and pid(obj, 7) == IDS.issue("m", VERSION, nonce)
    assert len({pid(obj, 7), pid(obj, 8)}) == 2


# -- reading ----------------------------------------------------------------------------------------------------

def read(reader_type: type, data: bytes, max_bytes: int = 1000, **lines: Any) -> tuple[list[Record], int]:
    reader = reader_type(Lines(io.BytesIO(data), max_bytes, block=5, **lines))
    records = list(reader)
    return records, reader.records


def test_lines_are_numbered_after_the_header_lines_from_the_first_line_given():
    lines = Lines(io.BytesIO(b"id,text\n1,a\n2,b"), 100, first_line=50, header_lines=1)
    assert lines.exhausted is False
    assert list(lines) == [(1, b"id,text"), (50, b"1,a"), (51, b"2,b")]
    assert lines.exhausted is True and lines.count == 3


def test_a_jsonl_record_keeps_its_id_as_text_and_has_none_without_one():
    records, _ = read(JsonlRecords, b'{"text": "a"}\n{"text": "b", "id": 7}\n{"text": "c", "id": null}\n')
    assert [(r.text, r.id) for r in records] == [("a", None), ("b", "7"), ("c", None)]


def test_csv_rows_of_spaces_are_blank_and_a_row_with_a_blank_first_field_is_not():
    records, count = read(CsvRecords, b"text\n   \n , x\nlast\n")
    assert [(r.line, r.text) for r in records] == [(3, " "), (4, "last")] and count == 2


def test_a_csv_row_that_is_not_csv_is_one_error():
    records, count = read(CsvRecords, b"text\na\rb\nlast\n")
    assert [(r.line, r.text, r.error) for r in records] == [
        (2, None, "not valid CSV: new-line character seen in unquoted field - do you need to open the file in "
                  "universal-newline mode?"),
        (3, "last", None)]
    assert count == 2


def test_csv_rows_short_of_fields_keep_the_ones_they_have():
    records, _ = read(CsvRecords, b"id,text,lang\n1,hello\n7\n")
    assert records == [Record(2, text="hello", id="1"),
                       Record(3, error="the row has 1 fields and no 'text' (column 2)")]


@pytest.mark.parametrize(("data", "problem"), [
    (b"x" * 20 + b"\ntext\n", "the record is longer than 10 bytes"),
    (b"te\xffxt\nok\n", "not valid UTF-8"),
])
def test_a_csv_header_that_cannot_be_read_refuses_the_file(data, problem):
    with pytest.raises(BatchInputError) as caught:
        read(CsvRecords, data, max_bytes=10)
    assert str(caught.value) == f"the CSV header (line 1) cannot be read: {problem}"


def test_a_csv_record_may_take_the_limit_exactly_across_its_lines():
    limit = 10
    exact, _ = read(CsvRecords, b'text\nabcdefghij\n"abcd\nefg"\n', max_bytes=limit)  # 10; 5 + newline + 4
    assert [r.text for r in exact] == ["abcdefghij", "abcd\nefg"]
    over, _ = read(CsvRecords, b'text\n"abcd\nefgh"\n"ab\ncde\nfg"\nok\n', max_bytes=limit)  # 5+1+5; 3+1+3+1+3
    assert [(r.line, r.error) for r in over] == [
        (2, "the record is longer than 10 bytes"), (4, "the record is longer than 10 bytes"), (7, None)]


def test_csv_s_field_limit_is_raised_to_the_line_limit():
    before = csv.field_size_limit()
    csv.field_size_limit(1000)
    try:
        records, _ = read(CsvRecords, b"text\n" + b"x" * 1500 + b"\n", max_bytes=5000)
        assert records == [Record(2, text="x" * 1500)]
        assert csv.field_size_limit() == 5000
    finally:
        csv.field_size_limit(before)


def test_checked_keeps_a_refused_record_and_one_without_text_as_they_are():
    assert checked(Record(5, text="", error="not valid JSON: x"), 10) == Record(5, text="", error="not valid JSON: x")
    assert checked(Record(3), 10) == Record(3)


# -- writing ----------------------------------------------------------------------------------------------------

class RecordingS3:
    """The multipart calls, recorded (bodies by size); an abort may be made to fail."""

    def __init__(self, fail_abort: bool = False):
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail_abort = fail_abort

    def _record(self, name: str, kwargs: dict[str, Any]) -> None:
        kept = {key: value for key, value in kwargs.items() if key != "Body"}
        if "Body" in kwargs:
            kept["size"] = len(kwargs["Body"])
        self.calls.append((name, kept))

    def put_object(self, **kwargs: Any) -> dict[str, Any]:
        self._record("put_object", kwargs)
        return {}

    def create_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        self._record("create_multipart_upload", kwargs)
        return {"UploadId": "up-1"}

    def upload_part(self, **kwargs: Any) -> dict[str, Any]:
        self._record("upload_part", kwargs)
        return {"ETag": f'"etag-{kwargs["PartNumber"]}"'}

    def complete_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        self._record("complete_multipart_upload", kwargs)
        return {}

    def abort_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        self._record("abort_multipart_upload", kwargs)
        if self.fail_abort:
            raise ClientError({"Error": {"Code": "InternalError", "Message": "no"}}, "AbortMultipartUpload")
        return {}


def test_a_stream_starts_empty_and_incomplete():
    stream = ObjectStream(RecordingS3(), BUCKET, "k")
    assert (stream.size, stream.parts, stream.upload_id, stream.completed) == (0, [], None, False)


def test_a_part_is_sent_as_soon_as_it_is_full_and_numbered_in_order():
    s3 = RecordingS3()
    where = {"Bucket": BUCKET, "Key": "out.jsonl"}
    with ObjectStream(s3, BUCKET, "out.jsonl", MIN_PART_BYTES) as stream:
        stream.write(b"x" * MIN_PART_BYTES)  # exactly a part: sent now
        assert [name for name, _ in s3.calls] == ["create_multipart_upload", "upload_part"]
        stream.write(b"abc")
        stream.complete()
        assert stream.completed is True and stream.size == MIN_PART_BYTES + 3
    stream.abort()  # done: nothing to abort
    assert s3.calls == [
        ("create_multipart_upload", {**where, "ContentType": "application/x-ndjson"}),
        ("upload_part", {**where, "UploadId": "up-1", "PartNumber": 1, "size": MIN_PART_BYTES}),
        ("upload_part", {**where, "UploadId": "up-1", "PartNumber": 2, "size": 3}),
        ("complete_multipart_upload", {**where, "UploadId": "up-1", "MultipartUpload": {"Parts": [
            {"ETag": '"etag-1"', "PartNumber": 1}, {"ETag": '"etag-2"', "PartNumber": 2}]}}),
    ]


def test_a_small_object_is_one_put_even_when_its_last_write_is_empty():
    s3 = RecordingS3()
    with ObjectStream(s3, BUCKET, "small.jsonl") as stream:
        stream.write(b"abc")
        stream.write(b"")
        stream.complete(if_empty=False)
    assert s3.calls == [("put_object", {"Bucket": BUCKET, "Key": "small.jsonl", "size": 3,
                                        "ContentType": "application/x-ndjson"})]


def test_an_abort_that_fails_is_logged_once_and_not_raised(caplog):
    s3 = RecordingS3(fail_abort=True)
    stream = ObjectStream(s3, BUCKET, "out.jsonl", MIN_PART_BYTES)
    stream.write(b"y" * MIN_PART_BYTES)
    with caplog.at_level(logging.ERROR, logger="ferry.runtime.batch"):
        stream.abort()
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, f"aborting the upload of s3://{BUCKET}/out.jsonl failed; a lifecycle rule must remove its "
                        "parts")]
    assert caplog.records[0].exc_info is not None
    assert stream.upload_id is None
    stream.abort()  # nothing left to abort
    assert [name for name, _ in s3.calls].count("abort_multipart_upload") == 1


# -- predicting a file ---------------------------------------------------------------------------------------------
IDS, VERSION = PredictionIds(None), "0123456789ab"  # the stand-in service's ids and its model's version


def pid(obj: BatchObject, line: int) -> str:
    """The id a record of `obj` gets from the stand-in service."""
    return obj.prediction_id(line, IDS, VERSION)


class Store:
    def __init__(self, known: tuple[str, ...]):
        self.known = known

    def get(self, model: str) -> object:
        if model not in self.known:
            raise ModelNotFoundError(f"no model named {model!r}")
        return SimpleNamespace(version=VERSION)  # what _predict reads of a predictor


class Service:
    """Predicts the length of each text (a classifier) or [length, 1.0] (an embedder)."""

    def __init__(self, task: str = "text-classification", max_input_chars: int = 50):
        self.task = task
        self.ids = IDS
        self.settings = SimpleNamespace(max_input_chars=max_input_chars)
        self.store = Store(("sentiment",))
        self.calls: list[dict[str, Any]] = []

    def predict(self, model: str, texts: list[str], *, prediction_ids: list[str], channel: str) -> Answer:
        self.calls.append({"model": model, "texts": list(texts), "ids": list(prediction_ids), "channel": channel})
        if self.task == "text-classification":
            payload: list[Any] = [[{"label": "long", "score": len(text)}] for text in texts]
        else:
            payload = [[float(len(text)), 1.0] for text in texts]
        return Answer(payload=payload, prediction_ids=list(prediction_ids), captures=[], model=model, version="v1",
                      latency_ms=1.0, task=self.task)


@pytest.fixture()
def s3(monkeypatch):
    yield from mocked_s3(monkeypatch, BUCKET)


def dropped(s3: Any, name: str, data: bytes, model: str = "sentiment") -> BatchObject:
    key = f"input/{model}/{name}"
    s3.put_object(Bucket=BUCKET, Key=key, Body=data)
    return BatchObject(BUCKET, key, "v1", model, name.rsplit(".", 1)[0], "." + name.rsplit(".", 1)[1])


def output(s3: Any, key: str) -> list[dict[str, Any]] | None:
    if not exists(s3, BUCKET, key):
        return None
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert body.endswith(b"\n") and body.isascii()
    return [json.loads(line) for line in body.decode().splitlines()]


def test_a_file_is_predicted_in_calls_of_32_records_into_lines_in_input_order(s3):
    texts = [f"text number {index}" for index in range(70)]
    data = "".join(json.dumps({"text": text, "id": f"r{index}"} if index % 2 else {"text": text}) + "\n"
                   for index, text in enumerate(texts)).encode()
    obj = dropped(s3, "file.jsonl", data)
    service, answers = Service(), []
    result = run_batch(s3, obj, service, capture=answers.append)
    assert result == BatchResult(key=obj.key, records=70, predicted=70, errors=0)
    assert [len(call["texts"]) for call in service.calls] == [CHUNK, CHUNK, 6]
    assert all(call["channel"] == "batch" and call["model"] == "sentiment" for call in service.calls)
    assert [answer.prediction_ids for answer in answers] == [call["ids"] for call in service.calls]
    lines = output(s3, obj.output_key)
    assert lines == [{"line": index + 1, "prediction_id": pid(obj, index + 1),
                      **({"id": f"r{index}"} if index % 2 else {}),
                      "predictions": [{"label": "long", "score": len(text)}]} for index, text in enumerate(texts)]
    assert [list(line) for line in lines[:2]] == [["line", "prediction_id", "predictions"],
                                                 ["line", "prediction_id", "id", "predictions"]]
    assert output(s3, obj.errors_key) is None  # no refused record: no errors object


def test_refused_records_go_to_the_errors_object_and_an_embedder_s_lines_hold_vectors(s3):
    data = b'{"text": "fine"}\n\n{"text": "   "}\nnot json\n{"text": "' + b"x" * 51 + b'"}\n{"text": "also fine"}\n'
    obj = dropped(s3, "mixed.jsonl", data)
    result = run_batch(s3, obj, Service("feature-extraction"))
    assert (result.records, result.predicted, result.errors, result.skipped) == (5, 2, 3, False)
    assert output(s3, obj.output_key) == [
        {"line": 1, "prediction_id": pid(obj, 1), "embedding": [4.0, 1.0]},
        {"line": 6, "prediction_id": pid(obj, 6), "embedding": [9.0, 1.0]}]
    errors = output(s3, obj.errors_key)
    assert [line["line"] for line in errors] == [3, 4, 5]
    assert errors[0] == {"line": 3, "error": "the text is empty"}
    assert errors[2] == {"line": 5, "error": "the text has 51 characters; at most 50 are accepted"}


def test_a_file_already_done_is_skipped_and_an_unknown_model_is_refused_before_reading(s3):
    obj = dropped(s3, "done.jsonl", b'{"text": "a"}\n')
    s3.put_object(Bucket=BUCKET, Key=obj.output_key, Body=b"")
    service = Service()
    assert run_batch(s3, obj, service) == BatchResult(key=obj.key, skipped=True)
    assert service.calls == []
    unknown = dropped(s3, "x.jsonl", b'{"text": "a"}\n', model="nobody")
    with pytest.raises(ModelNotFoundError):
        run_batch(s3, unknown, service)
    with pytest.raises(ModelNotFoundError):
        predict_stream(s3, unknown, io.BytesIO(b""), service, "out", "err")
    assert output(s3, unknown.output_key) is None


def test_a_chunk_of_a_csv_file_is_numbered_from_its_own_first_line(s3):
    obj = dropped(s3, "rows.csv", b"")
    body = io.BytesIO(b"id,text\nr40,forty\nr41,forty-one\n")
    result = predict_stream(s3, obj, body, Service(), "part.predictions.jsonl", "part.errors.jsonl", first_line=40,
                            header_lines=1)
    assert result == BatchResult(key=obj.key, records=2, predicted=2)
    assert [(line["line"], line["id"]) for line in output(s3, "part.predictions.jsonl")] == [(40, "r40"), (41, "r41")]
    assert output(s3, "part.predictions.jsonl")[0]["prediction_id"] == pid(obj, 40)


class Remaining:
    def __init__(self, *values: int):
        self.values = list(values)
        self.asked = 0

    def __call__(self) -> int:
        self.asked += 1
        return self.values.pop(0) if len(self.values) > 1 else self.values[0]


def test_the_time_left_is_checked_before_each_call_of_32_records(s3):
    data = "".join(json.dumps({"text": f"t{index}"}) + "\n" for index in range(70)).encode()
    obj = dropped(s3, "timed.jsonl", data)
    remaining = Remaining(10_000)
    run_batch(s3, obj, Service(), deadline=Deadline(remaining, margin_ms=10_000))  # exactly the margin: on
    assert remaining.asked == 4  # records 1, 33 and 65, then the last call


def test_the_time_left_is_checked_every_32_records_counting_the_refused_ones(s3):
    data = b"not json\n" + b"".join(json.dumps({"text": f"t{index}"}).encode() + b"\n" for index in range(40))
    obj = dropped(s3, "refused-first.jsonl", data)
    remaining = Remaining(10_000)
    run_batch(s3, obj, Service(), deadline=Deadline(remaining, margin_ms=10_000))
    assert remaining.asked == 3  # records 1 and 33 (the first refused), then the last call
    service, again = Service(), dropped(s3, "refused-first-again.jsonl", data)
    with pytest.raises(BatchIncompleteError, match=r"after 1 records; nothing was written"):
        run_batch(s3, again, service, deadline=Deadline(Remaining(10_000, 9_999), margin_ms=10_000))
    assert service.calls == []


def test_a_file_that_runs_out_of_time_is_raised_and_leaves_no_output(s3):
    data = "".join(json.dumps({"text": f"t{index}"}) + "\n" for index in range(40)).encode()
    obj = dropped(s3, "late.jsonl", data)
    with pytest.raises(BatchIncompleteError) as caught:
        run_batch(s3, obj, Service(), deadline=Deadline(Remaining(100_000, 100_000, 9_999), margin_ms=10_000))
    assert str(caught.value) == (
        f"{obj.key}: stopped with 10.0 s of the function's time left (the margin is 10.0 s) after 32 records; "
        "nothing was written: give the function a longer timeout or split the file")
    assert output(s3, obj.output_key) is None and output(s3, obj.errors_key) is None


def test_a_deadline_keeps_a_tenth_of_a_short_invocation_and_the_full_margin_of_a_long_one():
    assert Deadline.of(None) == Deadline(None, SAFETY_MARGIN_MS)
    long_run, short_run = (lambda: 900_000), (lambda: 120_000)
    assert Deadline.of(long_run) == Deadline(long_run, 60_000)
    assert Deadline.of(short_run) == Deadline(short_run, 12_000)
    assert Deadline.of(short_run, margin_ms=5_000) == Deadline(short_run, 5_000)
    odd_run = lambda: 120_005  # noqa: E731
    assert Deadline.of(odd_run) == Deadline(odd_run, 12_000)  # whole milliseconds
    obj = BatchObject(BUCKET, "input/m/f.jsonl", "e", "m", "f", ".jsonl")
    Deadline().check(obj, BatchResult(key=obj.key))  # no clock: never late
    Deadline(lambda: 5_000, 5_000).check(obj, BatchResult(key=obj.key))
    with pytest.raises(BatchIncompleteError, match=r"stopped with 4\.9 s .* \(the margin is 5\.0 s\) after 3 records"):
        Deadline(lambda: 4_900, 5_000).check(obj, BatchResult(key=obj.key, predicted=1, errors=2))
    with pytest.raises(BatchIncompleteError, match=r"stopped with 100\.0 s .* \(the margin is 150\.0 s\)"):
        Deadline(lambda: 100_000, 150_000).check(obj, BatchResult(key=obj.key))


class _StopsEarly(JsonlRecords):
    """A reader that gives up after the first record."""

    def __iter__(self):
        for number, raw in self.lines:
            self.records += 1
            yield Record(number, text=raw.decode())
            return


class _CountsOneMore(JsonlRecords):
    def __iter__(self):
        yield from super().__iter__()
        self.records += 1


@pytest.mark.parametrize(("reader", "message"), [
    (_StopsEarly, "{key}: reading stopped at line 1, before the end of the file"),
    (_CountsOneMore, "{key}: 4 records read but 2 predicted and 1 refused: 1 unaccounted for; nothing was written"),
])
def test_a_file_whose_records_do_not_add_up_is_never_completed(s3, monkeypatch, reader, message):
    monkeypatch.setitem(batch.READERS, ".jsonl", reader)
    obj = dropped(s3, "odd.jsonl", b'{"text": "a"}\n{"text": "b"}\nnot json\n')
    with pytest.raises(BatchIncompleteError) as caught:
        run_batch(s3, obj, Service())
    assert str(caught.value) == message.format(key=obj.key)
    assert output(s3, obj.output_key) is None


class _HeadFails:
    def __init__(self, code: str):
        self.code = code

    def head_object(self, **kwargs: Any) -> None:
        raise ClientError({"Error": {"Code": self.code, "Message": self.code}}, "HeadObject")


@pytest.mark.parametrize("code", ["404", "NoSuchKey", "NotFound"])
def test_a_missing_object_does_not_exist(code):
    assert exists(_HeadFails(code), BUCKET, "k") is False


def test_an_object_that_cannot_be_looked_at_is_an_error_not_an_absence():
    with pytest.raises(ClientError, match="AccessDenied"):
        exists(_HeadFails("AccessDenied"), BUCKET, "k")

    class Unexplained:
        def head_object(self, **kwargs: Any) -> None:
            raise ClientError({}, "HeadObject")

    with pytest.raises(ClientError):
        exists(Unexplained(), BUCKET, "k")


class _Short(Service):
    def predict(self, model: str, texts: list[str], *, prediction_ids: list[str], channel: str) -> Answer:
        answer = super().predict(model, texts, prediction_ids=prediction_ids, channel=channel)
        return Answer(**{**answer.__dict__, "payload": answer.payload[:-1]})


def test_a_service_that_answers_fewer_outputs_than_texts_fails_the_file(s3):
    obj = dropped(s3, "short.jsonl", b'{"text": "a"}\n{"text": "b"}\n')
    with pytest.raises(ValueError, match="zip"):
        run_batch(s3, obj, _Short())
    assert output(s3, obj.output_key) is None


def test_the_part_size_is_passed_down_to_both_outputs(s3):
    obj = dropped(s3, "f.jsonl", b'{"text": "a"}\n')
    with pytest.raises(ValueError, match="S3 takes parts of"):
        run_batch(s3, obj, Service(), part_bytes=MIN_PART_BYTES - 1)
    # 6 MiB of predictions and 6 MiB of error lines: parts of 5 MiB each, where the default part size (8 MiB) would
    # make each output one object
    record = json.dumps({"text": "fine", "id": "i" * 1000}).encode() + b"\n"
    big = dropped(s3, "big.jsonl", record * 6_000 + b"x\n" * 75_000)
    result = run_batch(s3, big, Service(), part_bytes=MIN_PART_BYTES)
    assert (result.predicted, result.errors) == (6_000, 75_000)
    assert s3.head_object(Bucket=BUCKET, Key=big.output_key)["ETag"].endswith('-2"')
    assert s3.head_object(Bucket=BUCKET, Key=big.errors_key)["ETag"].endswith('-2"')
