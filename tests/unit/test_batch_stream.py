"""The batch output, written to S3 as it is produced: parts of a multipart upload, completed or aborted."""

from __future__ import annotations

import pytest

from ferry.runtime.batch import MIN_PART_BYTES, ObjectStream

from helpers import mocked_s3

BUCKET = "ferry-batch-test"


@pytest.fixture()
def s3(monkeypatch):
    yield from mocked_s3(monkeypatch, BUCKET)


def lines(count: int, width: int = 100_000) -> list[bytes]:
    return [f"{number:08d} {'x' * width}\n".encode() for number in range(count)]


def test_an_output_of_several_parts_is_streamed_and_joined_line_for_line(s3):
    written = lines(160)  # 16 MB: three parts of 5 MiB and a last, smaller one
    with ObjectStream(s3, BUCKET, "out.jsonl", MIN_PART_BYTES) as stream:
        for line in written:
            stream.write(line)
        sent = len(stream.parts)
        assert sent == 3  # sent while writing, before the object exists
        assert len(s3.list_parts(Bucket=BUCKET, Key="out.jsonl", UploadId=stream.upload_id)["Parts"]) == 3
        assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET)
        stream.complete()
    assert len(stream.parts) == 4
    assert s3.get_object(Bucket=BUCKET, Key="out.jsonl")["Body"].read().splitlines(keepends=True) == written
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_a_failure_aborts_the_upload_and_leaves_no_object(s3):
    with pytest.raises(RuntimeError, match="the model failed"), ObjectStream(s3, BUCKET, "out.jsonl",
                                                                             MIN_PART_BYTES) as stream:
        for line in lines(80):
            stream.write(line)
        assert len(stream.parts) == 1
        raise RuntimeError("the model failed")
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET)


def test_a_small_output_is_one_put_and_an_empty_one_is_made_only_when_asked(s3):
    with ObjectStream(s3, BUCKET, "small.jsonl") as small, ObjectStream(s3, BUCKET, "none.jsonl") as none, \
            ObjectStream(s3, BUCKET, "empty.jsonl") as empty:
        small.write(b'{"line": 1}\n')
        small.complete()
        none.complete(if_empty=False)
        empty.complete()
    assert small.upload_id is None  # never reached a part
    keys = sorted(item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"])
    assert keys == ["empty.jsonl", "small.jsonl"]
    assert s3.get_object(Bucket=BUCKET, Key="small.jsonl")["Body"].read() == b'{"line": 1}\n'


def test_parts_under_the_s3_minimum_are_refused(s3):
    with pytest.raises(ValueError, match="S3 takes parts of 5242880 bytes or more"):
        ObjectStream(s3, BUCKET, "out.jsonl", MIN_PART_BYTES - 1)
