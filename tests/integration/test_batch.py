"""The batch function against the embedded moto server: every record of a file is predicted or refused, once.

Each test checks the accounting of the files it drops: ``predicted + errors == records``, with the output
holding `predicted` lines and the errors file `errors`. The stack runs the function in a worker process, as
Lambda would; a test that replaces a part of the function (its reader, its S3 client, its clock) calls
functions/batch/app.py imported in this process instead, against the same embedded AWS.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from typing import Any

import pytest

from ferry.local.context import LambdaContext
from ferry.local.stack import LocalStack, s3_event
from ferry.runtime import batch
from ferry.runtime.batch import (
    MIN_PART_BYTES,
    BatchIncompleteError,
    Deadline,
    JsonlRecords,
    objects_of,
    run_batch,
)

from helpers import ROOT, MetricWindow, drop, nothing_left, outputs, run_ferry, wait_for


@pytest.fixture(scope="module")
def stack(serving_layers):
    with LocalStack(root=ROOT, layers_dir=serving_layers) as running:
        yield running


@pytest.fixture()
def batch_app(stack, monkeypatch):
    """functions/batch/app.py imported in this process with the environment the stack gives the batch function."""
    function = stack.functions["BatchFunction"]
    for name, value in function.environment.items():
        if name in function.variables or name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("ferry_test_batch_app", function.function.code_uri / "app.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def call(module: Any, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """The in-process batch function's answer to an event."""
    return module.lambda_handler(event, context or LambdaContext(function_name="BatchFunction", timeout_s=900))


def emitted(capsys: pytest.CaptureFixture[str], metric: str) -> float:
    """The sum of `metric` in the EMF lines the in-process function printed."""
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    return sum(sum(line[metric]) if isinstance(line[metric], list) else line[metric] for line in lines
               if metric in line and "_aws" in line)


def jsonl(*lines: str | bytes) -> bytes:
    return b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines) + b"\n"


def review(number: int) -> str:
    return json.dumps({"text": f"review number {number}: {'great' if number % 2 else 'awful'}", "id": f"r{number}"})


# -- what the function answers ----------------------------------------------------------------------------------

def test_batch_keeps_order_reports_bad_lines_and_ignores_redelivery(stack, tmp_path):
    lines = [review(i) for i in range(70)]
    lines[10] = '{"text": ""}'
    lines[40] = "not json"
    outcome = drop(stack, tmp_path, "reviews.jsonl", jsonl(*lines))
    assert (outcome["records"], outcome["predicted"], outcome["errors"], outcome["skipped"]) == (70, 68, 2, False)
    rows, errors = outputs(stack, outcome)
    assert [row["line"] for row in rows] == [n for n in range(1, 71) if n not in (11, 41)]
    assert rows[0]["id"] == "r0" and {p["label"] for p in rows[0]["predictions"]} == {"negative", "positive"}
    assert [(error["line"], error["error"]) for error in errors] == [
        (11, "the text is empty"), (41, "not valid JSON: Expecting value: line 1 column 1 (char 0)")]
    s3, bucket = stack.client("s3"), stack.table_names["BatchBucket"]
    head = s3.head_object(Bucket=bucket, Key="input/tiny-bert/reviews.jsonl")
    again = stack.invoke("BatchFunction", s3_event(bucket, "input/tiny-bert/reviews.jsonl", head["ETag"], 1))
    assert again["results"][0]["skipped"] is True
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="output/tiny-bert/reviews.")["Contents"]]
    assert len(keys) == 2  # predictions and errors, once


def test_batch_csv_and_refusals(stack, tmp_path):
    window = MetricWindow(stack.client("cloudwatch"))  # what this test's refusals count, alone
    outcome = drop(stack, tmp_path, "texts.csv", b'id,text\n1,"hello, world"\n2,\n')
    assert (outcome["records"], outcome["predicted"], outcome["errors"]) == (2, 1, 1)
    rows, errors = outputs(stack, outcome)
    assert (rows[0]["line"], rows[0]["id"], errors) == (2, "1", [{"line": 3, "error": "the text is empty"}])
    unknown = drop(stack, tmp_path, "texts.csv", b"text\nhello\n", model="nope")
    assert "no model named 'nope'" in unknown["error"]
    no_text = drop(stack, tmp_path, "no-text.csv", b"id,body\n1,hello\n")
    assert no_text["error"] == "the CSV header (line 1) has no 'text' column; columns: id, body"
    assert nothing_left(stack, "output/tiny-bert/no-text.")
    refused = stack.invoke("BatchFunction", s3_event(stack.table_names["BatchBucket"], "input/x.txt", "e", 1))
    assert "batch inputs go to input/<model>/<file>.jsonl or .csv" in refused["rejected"]
    # the three refusals are counted for an alarm, through the batch function's EMF, in the embedded CloudWatch
    counted = {("BatchFailures", (("service", "ferry-batch"),)): 3}
    assert window.await_totals(counted) == counted


# -- issue 1: a bad line is one error line, and the next line is read ---------------------------------------------

def test_a_bad_byte_costs_its_line_not_the_rest_of_the_file(stack, tmp_path):
    lines: list[str | bytes] = [json.dumps({"text": f"text {i}"}) for i in range(1000)]
    lines[500] = b'{"text": "caf\xe9 au lait"}'  # latin-1, not UTF-8
    outcome = drop(stack, tmp_path, "bad-byte.jsonl", jsonl(*lines))
    assert (outcome["records"], outcome["predicted"], outcome["errors"]) == (1000, 999, 1)  # was 476 + 1
    rows, errors = outputs(stack, outcome)
    assert [row["line"] for row in rows] == [n for n in range(1, 1001) if n != 501]
    assert errors == [{"line": 501, "error": "not valid UTF-8: byte 14 of the line is 0xe9"}]

    csv_outcome = drop(stack, tmp_path, "bad-byte.csv", b"id,text\na,hello\nb,caf\xe9\nc,world\n")
    assert (csv_outcome["records"], csv_outcome["predicted"], csv_outcome["errors"]) == (3, 2, 1)  # was 0 + 1
    rows, errors = outputs(stack, csv_outcome)
    assert [(row["line"], row["id"]) for row in rows] == [(2, "a"), (4, "c")]
    assert errors == [{"line": 3, "error": "not valid UTF-8"}]


def test_deep_json_and_a_long_csv_field_are_one_error_each(stack, tmp_path):
    outcome = drop(stack, tmp_path, "deep.jsonl", jsonl(review(1), "[" * 100_000, review(3)))
    assert (outcome["records"], outcome["predicted"], outcome["errors"]) == (3, 2, 1)  # was a RecursionError
    rows, errors = outputs(stack, outcome)
    assert [row["line"] for row in rows] == [1, 3]
    assert errors == [{"line": 2, "error": "not valid JSON: nested too deep"}]

    field = "x" * 140_000  # over csv's default field limit (131,072), which ended the file there
    csv_outcome = drop(stack, tmp_path, "long.csv", f"text\nfirst\n{field}\nlast\n".encode())
    assert (csv_outcome["records"], csv_outcome["predicted"], csv_outcome["errors"]) == (3, 2, 1)
    rows, errors = outputs(stack, csv_outcome)
    assert [row["line"] for row in rows] == [2, 4]
    assert errors == [{"line": 3, "error": "the text has 140000 characters; at most 10000 are accepted"}]


# -- issue 5: tests that fail when a line is lost or misnumbered ---------------------------------------------------

def test_error_lines_keep_their_line_numbers_after_blank_lines_and_multi_line_records(stack, tmp_path):
    outcome = drop(stack, tmp_path, "blanks.jsonl", jsonl(review(1), "", "   ", "not json", review(5), "", "{}"))
    assert (outcome["records"], outcome["predicted"], outcome["errors"]) == (4, 2, 2)
    rows, errors = outputs(stack, outcome)
    assert [row["line"] for row in rows] == [1, 5]
    assert [error["line"] for error in errors] == [4, 7]

    data = b'id,text\n\na,one\nb,"two\nlines"\n\nc,\nd,four\nf,caf\xe9\n'
    csv_outcome = drop(stack, tmp_path, "blanks.csv", data)
    assert (csv_outcome["records"], csv_outcome["predicted"], csv_outcome["errors"]) == (5, 3, 2)
    rows, errors = outputs(stack, csv_outcome)
    assert [(row["line"], row["id"]) for row in rows] == [(3, "a"), (4, "b"), (8, "d")]  # b starts on line 4
    assert errors == [{"line": 7, "error": "the text is empty"}, {"line": 9, "error": "not valid UTF-8"}]


def test_a_line_over_the_limit_is_one_error_and_the_next_line_is_read(stack, tmp_path):
    limit = batch.max_line_bytes(10_000)  # the function's FERRY_MAX_INPUT_CHARS is the default
    padded = json.dumps({"text": "short enough", "padding": "x" * limit})  # a valid object, too long a line
    outcome = drop(stack, tmp_path, "long-line.jsonl", jsonl(review(1), padded, review(3), json.dumps(
        {"text": "y" * 10_001}), review(5)))
    assert (outcome["records"], outcome["predicted"], outcome["errors"]) == (5, 3, 2)
    rows, errors = outputs(stack, outcome)
    assert [row["line"] for row in rows] == [1, 3, 5]
    assert errors == [{"line": 2, "error": f"the line is longer than {limit} bytes"},
                      {"line": 4, "error": "the text has 10001 characters; at most 10000 are accepted"}]


class _DroppingRecords(JsonlRecords):
    """A reader with a bug: it finds line 2's record and never yields it."""

    def __iter__(self):
        return (record for record in super().__iter__() if record.line != 2)


def test_a_file_whose_records_do_not_add_up_is_never_marked_done(stack, batch_app, monkeypatch, caplog, capsys):
    event, _ = _put(stack, "input/tiny-bert/lost.jsonl", jsonl(review(1), review(2), review(3)))
    monkeypatch.setitem(batch.READERS, ".jsonl", _DroppingRecords)
    with pytest.raises(BatchIncompleteError, match=r"input/tiny-bert/lost.jsonl: 3 records read but 2 predicted "
                                                   r"and 0 refused: 1 unaccounted for; nothing was written"):
        call(batch_app, event)
    assert nothing_left(stack, "output/tiny-bert/lost.")
    # the function's error log names the file, and the failure is counted for an alarm
    logged = [record for record in caplog.records if str(record.getMessage()).startswith("batch failed")]
    assert [(record.levelname, getattr(record, "key", None)) for record in logged] == \
        [("ERROR", "input/tiny-bert/lost.jsonl")]
    assert emitted(capsys, "BatchFailures") == 1
    monkeypatch.undo()  # the reader fixed, the retry of the same event finishes the file (by the stack's function)
    s3, bucket = stack.client("s3"), stack.table_names["BatchBucket"]
    head = s3.head_object(Bucket=bucket, Key="input/tiny-bert/lost.jsonl")
    outcome = stack.invoke("BatchFunction", s3_event(bucket, "input/tiny-bert/lost.jsonl", head["ETag"], 1))
    outcome = outcome["results"][0]
    assert (outcome["records"], outcome["predicted"], outcome["errors"]) == (3, 3, 0)
    outputs(stack, outcome)


# -- issue 2: a file that cannot be finished is raised, and a rerun finishes it ------------------------------------

class _FailingS3:
    """The function's S3 client, failing to complete the output as S3 does now and then."""

    def __init__(self, real: Any):
        self.real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def put_object(self, **arguments: Any) -> Any:
        from botocore.exceptions import ClientError

        if arguments["Key"].endswith(".predictions.jsonl"):
            raise ClientError({"Error": {"Code": "InternalError", "Message": "We encountered an internal error"}},
                              "PutObject")
        return self.real.put_object(**arguments)


def test_an_s3_failure_is_raised_and_a_rerun_finishes_the_file(stack, batch_app, monkeypatch):
    from botocore.exceptions import ClientError

    event, _ = _put(stack, "input/tiny-bert/flaky.jsonl", jsonl(review(1), "oops", review(3)))
    failing = _FailingS3(batch_app.s3())
    monkeypatch.setattr(batch_app, "s3", lambda: failing)
    with pytest.raises(ClientError, match="InternalError"):
        call(batch_app, event)
    s3, bucket = stack.client("s3"), stack.table_names["BatchBucket"]
    done = s3.list_objects_v2(Bucket=bucket, Prefix="output/tiny-bert/flaky.").get("Contents", [])
    assert [item["Key"].rsplit(".", 2)[-2] for item in done] == ["errors"]  # errors written, never the done mark
    monkeypatch.undo()
    head = s3.head_object(Bucket=bucket, Key="input/tiny-bert/flaky.jsonl")
    outcome = stack.invoke("BatchFunction", s3_event(bucket, "input/tiny-bert/flaky.jsonl", head["ETag"], 1))
    outcome = outcome["results"][0]
    assert (outcome["records"], outcome["predicted"], outcome["errors"]) == (3, 2, 1)
    assert outputs(stack, outcome)[1] == [{"line": 2, "error": "not valid JSON: Expecting value: line 1 column 1 "
                                                               "(char 0)"}]


class _EndingContext:
    """Lambda's context, with the clock at `left_ms` after `calls` questions: a function about to time out."""

    def __init__(self, function_name: str, calls: int, left_ms: int = 30_000):
        self.real = LambdaContext(function_name=function_name, timeout_s=900)
        self.calls, self.left_ms = calls, left_ms

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def get_remaining_time_in_millis(self) -> int:
        self.calls -= 1
        return 900_000 if self.calls >= 0 else self.left_ms


def test_a_file_that_runs_out_of_time_stops_cleanly_and_is_raised(stack, batch_app):
    event, _ = _put(stack, "input/tiny-bert/slow.jsonl", jsonl(*(review(i) for i in range(100))))
    # the first question sets the margin (60 s of 900), then 2 checks pass: 64 records, and the third stops
    with pytest.raises(BatchIncompleteError, match=r"input/tiny-bert/slow.jsonl: stopped with 30.0 s of the "
                                                   r"function's time left \(the margin is 60.0 s\) after 64 records"):
        call(batch_app, event, _EndingContext("BatchFunction", calls=3))
    assert nothing_left(stack, "output/tiny-bert/slow.")


# -- issue 3: an output larger than memory or /tmp goes to S3 part by part ------------------------------------------

class _CountingS3:
    def __init__(self, real: Any):
        self.real = real
        self.parts: list[tuple[str, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def upload_part(self, **arguments: Any) -> Any:
        self.parts.append((arguments["Key"], len(arguments["Body"])))
        return self.real.upload_part(**arguments)


def _put(stack: LocalStack, key: str, data: bytes) -> tuple[dict[str, Any], Any]:
    s3, bucket = stack.client("s3"), stack.table_names["BatchBucket"]
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    head = s3.head_object(Bucket=bucket, Key=key)
    return s3_event(bucket, key, head["ETag"], len(data)), s3


def test_a_large_output_is_streamed_in_parts_and_joined_line_for_line(stack, batch_app):
    service = batch_app.service
    ids = [f"{number:05d}-" + "i" * 30_000 for number in range(600)]  # each echoed: an output of about 18 MB
    lines = [json.dumps({"text": f"review {n}: {'great' if n % 2 else 'awful'}", "id": ids[n]}) for n in range(600)]
    lines[7] = json.dumps({"text": "", "id": "empty"})
    event, s3 = _put(stack, "input/tiny-bert/large.jsonl", jsonl(*lines))
    obj = next(objects_of(event))
    spy = _CountingS3(s3)
    result = run_batch(spy, obj, service, part_bytes=MIN_PART_BYTES)
    assert (result.records, result.predicted, result.errors) == (600, 599, 1)
    output_parts = [size for key, size in spy.parts if key == obj.output_key]
    assert len(output_parts) == 4 and all(size >= MIN_PART_BYTES for size in output_parts[:-1])
    body = s3.get_object(Bucket=obj.bucket, Key=obj.output_key)["Body"].read().decode()
    assert body.endswith("\n")
    rows = [json.loads(line) for line in body.splitlines()]
    expected = [n for n in range(600) if n != 7]
    assert [(row["line"], row["id"]) for row in rows] == [(n + 1, ids[n]) for n in expected]
    version = service.store.get("tiny-bert").version
    assert [row["prediction_id"] for row in rows] == [service.ids.issue(
        "tiny-bert", version, hashlib.sha256(f"{obj.key}\n{obj.etag}\n{n + 1}".encode()).hexdigest()[:20])
        for n in expected]
    assert s3.get_object(Bucket=obj.bucket, Key=obj.errors_key)["Body"].read() == (
        b'{"line": 8, "error": "the text is empty"}\n')


def test_a_large_output_that_fails_half_way_leaves_no_part(stack, batch_app):
    service = batch_app.service
    lines = [json.dumps({"text": f"review {n}", "id": f"{n:05d}-" + "i" * 30_000}) for n in range(600)]
    event, s3 = _put(stack, "input/tiny-bert/cut.jsonl", jsonl(*lines))
    obj = next(objects_of(event))
    spy = _CountingS3(s3)
    clock = iter([900_000] * 12 + [1_000] * 100)  # 12 checks pass: 384 records, over two parts sent
    with pytest.raises(BatchIncompleteError, match="after 384 records"):
        run_batch(spy, obj, service, part_bytes=MIN_PART_BYTES, deadline=Deadline(lambda: next(clock), 60_000))
    assert len(spy.parts) >= 2
    assert nothing_left(stack, "output/tiny-bert/cut.")  # the upload aborted


# -- issue 4: batch predictions are captured, once, with channel "batch" -----------------------------------------

def _captures(stack: LocalStack, ids: set[str]) -> dict[str, dict]:
    """The capture items of these prediction ids, once all are there (or the time is up), each looked up by its key:
    a scan of the whole table takes seconds in moto once it holds thousands, and starves the capture function."""
    dynamodb, table = stack.client("dynamodb"), stack.table_names["CaptureTable"]
    found: dict[str, dict] = {}

    def look_up() -> dict[str, dict]:
        missing = sorted(ids - set(found))
        for start in range(0, len(missing), 100):  # BatchGetItem takes 100 keys
            request: dict = {table: {"Keys": [{"prediction_id": {"S": i}} for i in missing[start:start + 100]],
                                     "ConsistentRead": True}}
            while request:  # what it did not get to this time, it names for the next
                answer = dynamodb.batch_get_item(RequestItems=request)
                for item in answer["Responses"].get(table, []):
                    found[item["prediction_id"]["S"]] = {name: _plain(value) for name, value in item.items()}
                request = answer.get("UnprocessedKeys") or {}
        return found

    return wait_for(look_up, lambda seen: set(seen) >= ids, timeout=20)


def _plain(value: dict) -> Any:
    """A DynamoDB attribute value as the resource API gives it (strings and numbers are all these tests read)."""
    from boto3.dynamodb.types import TypeDeserializer

    return TypeDeserializer().deserialize(value)


def _await_delivered(stack: LocalStack, lines: int, since: int) -> int:
    """Log lines delivered to subscriptions (the capture function) since `since`, once `lines` are (or 20 s on)."""
    return wait_for(lambda: stack.delivered - since, lambda delivered: delivered >= lines, timeout=20)


def test_batch_predictions_are_captured_once_with_channel_batch(stack, tmp_path):
    lines = [review(i) for i in range(40)]
    lines[20] = "{}"
    delivered = stack.delivered
    outcome = drop(stack, tmp_path, "captured.jsonl", jsonl(*lines))
    assert (outcome["records"], outcome["predicted"], outcome["errors"]) == (40, 39, 1)
    rows, _ = outputs(stack, outcome)
    ids = {row["prediction_id"] for row in rows}
    assert _await_delivered(stack, 39, since=delivered) >= 39  # the capture lines reached the capture function
    captured = _captures(stack, ids)
    assert set(captured) == ids
    assert {item["channel"] for item in captured.values()} == {"batch"}
    assert {item["label"] for item in captured.values()} <= {"negative", "positive"}
    # the same object run again (its output deleted): the same ids, so the captures are duplicates, counted as such
    # and written over nothing (each item keeps the first run's prediction time, epoch_ms, not the rerun's)
    s3, bucket = stack.client("s3"), stack.table_names["BatchBucket"]
    for key in (outcome["output"], outcome["output"].replace(".predictions.", ".errors.")):
        s3.delete_object(Bucket=bucket, Key=key)
    window = MetricWindow(stack.client("cloudwatch"))
    delivered = stack.delivered
    again = drop(stack, tmp_path, "captured.jsonl", jsonl(*lines))
    assert (again["records"], again["predicted"], again["errors"], again["skipped"]) == (40, 39, 1, False)
    assert {row["prediction_id"] for row in outputs(stack, again)[0]} == ids
    assert _await_delivered(stack, 39, since=delivered) >= 39  # the rerun's capture lines reached it too...
    # ...which found every one already there (a late count of the first run's writes may fall in the window, so the
    # writes are checked on the items: each as the first run wrote it)
    counted = {("CaptureDuplicates", (("service", "ferry-capture"),)): 39}
    assert window.await_totals(counted) == counted
    assert _captures(stack, ids) == captured


def test_api_predictions_are_captured_with_channel_api(stack):
    event = json.loads((ROOT / "events" / "predict.json").read_text())
    event = json.loads(json.dumps(event).replace(f"/models/{event['pathParameters']['model']}/", "/models/tiny-bert/"))
    event["pathParameters"]["model"] = "tiny-bert"
    response = stack.invoke("PredictFunction", event)
    ids = set(response["headers"]["x-ferry-prediction-ids"].split(","))
    captured = _captures(stack, ids)
    assert set(captured) == ids and {item["channel"] for item in captured.values()} == {"api"}


# -- the command ----------------------------------------------------------------------------------------------------

def test_ferry_batch_writes_predictions_and_refused_records_beside_the_file(serving_layers, tmp_path):
    source = tmp_path / "mixed.jsonl"
    source.write_bytes(jsonl(review(1), b'{"text": "\xff"}', "", review(4)))
    stale = tmp_path / "mixed.errors.jsonl"
    result = run_ferry("batch", str(source), "--model", "tiny-bert", "--layers-dir", str(serving_layers))
    assert result.returncode == 0, result.stderr[-1500:]
    assert result.stdout == (f"3 records: 2 predictions -> {tmp_path / 'mixed.predictions.jsonl'}; 1 refused -> "
                             f"{stale}\n")
    rows = [json.loads(line) for line in (tmp_path / "mixed.predictions.jsonl").read_text().splitlines()]
    errors = [json.loads(line) for line in stale.read_text().splitlines()]
    assert [row["line"] for row in rows] == [1, 4]
    assert errors == [{"line": 2, "error": "not valid UTF-8: byte 11 of the line is 0xff"}]
    assert len(rows) + len(errors) == 3
    source.write_bytes(jsonl(review(1)))  # fixed: the errors file of the run before is not left to mislead
    result = run_ferry("batch", str(source), "--model", "tiny-bert", "--layers-dir", str(serving_layers))
    assert result.returncode == 0 and not stale.exists()
    assert result.stdout == f"1 records: 1 predictions -> {tmp_path / 'mixed.predictions.jsonl'}\n"


def test_a_labels_file_dropped_in_the_bucket_is_read_line_by_line_and_nothing_vanishes(stack, tmp_path):
    """labels/ goes to the feedback function (the same bucket as input/, another trigger): every row is accepted
    or rejected with its line, a bad byte and a ragged row included, and the report says so."""
    outcome = drop(stack, tmp_path, "reviews.jsonl", b'{"text": "great"}\n{"text": "awful"}\n{"text": "fine"}\n')
    rows, _ = outputs(stack, outcome)
    ids = [row["prediction_id"] for row in rows]
    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"prediction_id,label\n" + f"{ids[0]},positive\n".encode() + b"\n"
                       + f"{ids[1]},negative,extra\n".encode() + f"{ids[2]},negative\n".encode()
                       + b"p1.tiny-bert.\xff,negative\n" + f"{ids[0]},positive\n".encode())
    answer = stack.drop_file("BatchBucket", "labels/day-1.csv", labels)
    [summary] = answer["files"]
    # lines 2, 5, 7 accepted (7 a duplicate of 2), 4 (a third cell) and 6 (a bad byte) rejected, 3 blank: no row
    assert (summary["rows"], summary["accepted"], summary["rejected"]) == (5, 3, 2), summary
    assert summary["rows"] == summary["accepted"] + summary["rejected"] and summary["duplicates"] == 1
    s3, bucket = stack.client("s3"), stack.table_names["BatchBucket"]
    report = json.loads(s3.get_object(Bucket=bucket, Key=summary["report"])["Body"].read())
    assert [error["line"] for error in report["errors"]] == [4, 6] and report["complete"]
    feedback = stack.resource("dynamodb").Table(stack.table_names["FeedbackTable"])
    assert feedback.get_item(Key={"prediction_id": ids[2]})["Item"]["source"] == "bulk:labels/day-1.csv:5"
