"""Files larger than FERRY_BATCH_CHUNK_BYTES go through the chunked path (here with a tiny threshold, in process
as locally): the output is line for line what the whole file gives, and every record is accounted for."""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict

import pytest

from ferry.local.stack import LocalStack
from ferry.runtime.batch import READERS, BatchIncompleteError, BatchObject, Lines, max_line_bytes
from ferry.runtime.chunks import item_of, join, plan
from ferry.runtime.constants import DEFAULT_MAX_INPUT_CHARS, ENV_BATCH_CHUNK_BYTES

from helpers import ROOT, drop, nothing_left, outputs

CHUNK_BYTES = 2000


@pytest.fixture(scope="module")
def stack(serving_layers):
    os.environ[ENV_BATCH_CHUNK_BYTES] = str(CHUNK_BYTES)  # read by the batch function as it is imported
    try:
        with LocalStack(root=ROOT, layers_dir=serving_layers) as running:
            yield running
    finally:
        del os.environ[ENV_BATCH_CHUNK_BYTES]


def expected(data: bytes, suffix: str) -> list[tuple[int, str | None]]:
    """(line, error) of every record of the whole file, read in one piece."""
    reader = READERS[suffix](Lines(io.BytesIO(data), max_line_bytes(DEFAULT_MAX_INPUT_CHARS)))
    found = []
    for record in reader:
        error = record.error if record.error is not None else (None if (record.text or "").strip() else "empty")
        found.append((record.line, error))
    return found


def check_against_whole(stack: LocalStack, outcome: dict, data: bytes, suffix: str, key: str) -> tuple[int, int]:
    rows, errors = outputs(stack, outcome)
    assert outcome["chunks"] > 3
    records = expected(data, suffix)
    assert outcome["records"] == len(records)
    assert [row["line"] for row in rows] == [line for line, error in records if error is None]  # input order
    assert [row["line"] for row in errors] == [line for line, error in records if error is not None]
    etag = outcome["output"].split(".")[-3]
    obj = BatchObject(bucket="", key=key, etag=etag, model="tiny-bert", name="", suffix=suffix)
    # as the whole file's: the id's nonce comes from the key, the etag and the line (the mac from the stack's secret)
    assert all(row["prediction_id"].split(".")[1::2] == ["tiny-bert", obj.prediction_nonce(row["line"])]
               for row in rows)
    assert nothing_left(stack, outcome["output"].replace(".predictions.jsonl", ".parts/"))
    return len(rows), len(errors)


def test_a_large_jsonl_file_is_predicted_in_chunks_exactly_as_whole(stack, tmp_path):
    lines = []
    for number in range(1, 401):
        if number % 37 == 0:
            lines.append(b"")
        elif number % 53 == 0:
            lines.append(b'{"text": "a bad \xff byte"}')
        elif number % 71 == 0:
            lines.append(b'{"text": not json}')
        else:
            lines.append(json.dumps({"text": f"review {number}: {'great' if number % 2 else 'awful'}"}).encode())
    data = b"\n".join(lines) + b"\n"
    outcome = drop(stack, tmp_path, "large.jsonl", data)
    predicted, errors = check_against_whole(stack, outcome, data, ".jsonl", "input/tiny-bert/large.jsonl")
    assert (outcome["records"], predicted, errors) == (390, 378, 12)  # 400 lines, 10 blank


def test_a_large_csv_file_with_quoted_newlines_is_cut_only_between_records(stack, tmp_path):
    rows = [b"id,text"]
    for number in range(1, 301):
        if number % 5 == 0:
            rows.append(b'%d,"a review over\ntwo lines, ""quoted"""' % number)
        elif number % 47 == 0:
            rows.append(b"%d,bad \xff byte" % number)
        else:
            rows.append(b"%d,review %d was %s" % (number, number, b"great" if number % 2 else b"awful"))
    data = b"\n".join(rows) + b"\n"
    outcome = drop(stack, tmp_path, "large.csv", data)
    predicted, errors = check_against_whole(stack, outcome, data, ".csv", "input/tiny-bert/large.csv")
    assert (outcome["records"], predicted, errors) == (300, 295, 5)


def test_a_chunk_runs_once_and_the_join_waits_for_every_chunk(stack, tmp_path):
    s3, bucket = stack.client("s3"), stack.table_names["BatchBucket"]
    data = b"".join(json.dumps({"text": f"text {n}"}).encode() + b"\n" for n in range(200))
    s3.put_object(Bucket=bucket, Key="input/tiny-bert/parts.jsonl", Body=data)
    etag = s3.head_object(Bucket=bucket, Key="input/tiny-bert/parts.jsonl")["ETag"].strip('"')
    obj = BatchObject(bucket, "input/tiny-bert/parts.jsonl", etag, "tiny-bert", "parts", ".jsonl")
    cut = plan(io.BytesIO(data), len(data), CHUNK_BYTES, csv=False)
    first = stack.invoke("BatchFunction", item_of(obj, cut, cut.chunks[0]))
    again = stack.invoke("BatchFunction", item_of(obj, cut, cut.chunks[0]))
    assert (first["skipped"], again["skipped"]) == (False, True)
    assert first["predicted"] == again["predicted"] == first["records"] > 0
    with pytest.raises(BatchIncompleteError, match=rf"chunk 2 of {len(cut.chunks)} is not done"):
        join(s3, {"object": asdict(obj), "chunks": len(cut.chunks)})
    for chunk in cut.chunks[1:]:
        stack.invoke("BatchFunction", item_of(obj, cut, chunk))
    joined = stack.invoke("BatchFunction", {"join": {"object": asdict(obj), "chunks": len(cut.chunks)}})
    assert (joined["records"], joined["predicted"], joined["errors"]) == (200, 200, 0)
