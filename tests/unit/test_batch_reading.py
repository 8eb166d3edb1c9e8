"""The batch readers, without S3 or a model: every record of a file is yielded once, numbered by its line."""

from __future__ import annotations

import io
import json
import tracemalloc

import pytest

from ferry.runtime.batch import (
    BatchInputError,
    CsvRecords,
    JsonlRecords,
    Lines,
    Record,
    checked,
    max_line_bytes,
)


def read(reader_type, data: bytes, max_bytes: int = 1000, block: int = 7) -> tuple[list[Record], int]:
    """The records of `data` and the reader's count of them; a small block makes lines cross block ends."""
    lines = Lines(io.BytesIO(data), max_bytes, block=block)
    reader = reader_type(lines)
    records = list(reader)
    assert lines.exhausted
    assert reader.records == len(records)  # each record found is yielded once
    return records, reader.records


def outcome(records: list[Record]) -> tuple[list[int], list[int]]:
    """(lines of usable records, lines of refused ones)."""
    usable = [checked(record, 50) for record in records]
    return ([r.line for r in usable if r.error is None], [r.line for r in usable if r.error is not None])


@pytest.mark.parametrize("block", [1, 2, 5, 64, 1 << 20])
def test_lines_split_on_newlines_whatever_the_block(block):
    data = b"\xef\xbb\xbfone\r\ntwo\n\nthree"  # a BOM, CRLF, a blank line, no final newline
    assert list(Lines(io.BytesIO(data), 10, block=block)) == [(1, b"one\r"), (2, b"two"), (3, b""), (4, b"three")]


@pytest.mark.parametrize("block", [1, 3, 64])
def test_a_line_over_the_limit_is_none_and_the_next_one_is_read(block):
    data = b"short\n" + b"x" * 11 + b"\nexactly10!\n" + b"y" * 30
    assert list(Lines(io.BytesIO(data), 10, block=block)) == [(1, b"short"), (2, None), (3, b"exactly10!"), (4, None)]


class _Endless:
    """A stream of one line of `size` bytes, then a short line: as S3 would hand over a huge object."""

    def __init__(self, size: int):
        self.left = size
        self.block = b"[" * (1 << 20)
        self.tail = b'\n{"text": "after"}\n'

    def read(self, amount: int) -> bytes:
        if self.left > 0:
            self.left -= len(self.block)
            return self.block[:amount]
        tail, self.tail = self.tail, b""
        return tail


def test_a_huge_line_is_passed_over_without_being_held():
    tracemalloc.start()
    try:
        lines = Lines(_Endless(64 << 20), max_line_bytes(10_000))
        reader = JsonlRecords(lines)
        records = list(reader)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"reading a 64 MiB line took {peak} bytes"  # a block and a bounded line, not the line
    assert [(r.line, r.text, r.error) for r in records] == [
        (1, None, f"the line is longer than {max_line_bytes(10_000)} bytes"), (2, "after", None)]
    assert reader.records == 2 and lines.exhausted


def test_jsonl_numbers_records_by_line_across_blank_lines_and_bad_ones():
    data = "\n".join([
        json.dumps({"text": "one", "id": 1}),  # 1
        "",  # 2: blank, no record
        "   ",  # 3: blank
        "not json",  # 4
        json.dumps({"text": "five"}),  # 5
        '{"text": "caf\xe9"}',  # 6: valid (UTF-8 é)
        "[" * 100_000,  # 7: nested too deep
        json.dumps({"nope": 1}),  # 8
        "\t",  # 9: blank
        json.dumps({"text": ""}),  # 10: empty text
    ]).encode() + b'\n{"text": "bad \xff byte"}\n' + json.dumps({"text": "last"}).encode()  # 11, 12
    records, count = read(JsonlRecords, data, max_bytes=200_000)
    assert count == 9  # 12 lines, 3 blank
    assert [r.line for r in records] == [1, 4, 5, 6, 7, 8, 10, 11, 12]
    by_line = {r.line: r for r in records}
    assert by_line[1].id == "1" and by_line[6].text == "café"
    assert by_line[4].error.startswith("not valid JSON: Expecting value")
    assert by_line[7].error == "not valid JSON: nested too deep"
    assert by_line[8].error == 'expected an object with a "text" string'
    assert by_line[11].error == "not valid UTF-8: byte 15 of the line is 0xff"
    predicted, refused = outcome(records)
    assert (predicted, refused) == ([1, 5, 6, 12], [4, 7, 8, 10, 11])
    assert len(predicted) + len(refused) == count  # 4 + 5 == 9


def test_csv_numbers_records_by_their_first_line_and_keeps_a_bad_byte_in_its_row():
    long_field = "z" * 140_000  # over csv's default field limit (131,072), which used to end the file
    data = (
        b"id,text\n"  # 1: header
        b"\n"  # 2: blank
        b'a,"hello, world"\n'  # 3
        b'b,"three\n'  # 4: a quoted field over three lines
        b"lines\n"  # 5
        b'long"\n'  # 6
        b"c,caf\xe9 latin-1\n"  # 7: not UTF-8
    ) + (
        "\n"  # 8: blank
        "d,\n"  # 9: empty text
        f"e,{long_field}\n"  # 10: over the text limit, read whole
        "f,fine\r\n"  # 11: CRLF
    ).encode() + b"g,the last without a newline"  # 12
    records, count = read(CsvRecords, data, max_bytes=max_line_bytes(10_000), block=4096)
    assert count == 7  # 12 lines: a header, 2 blank, one record over 3 lines
    assert [r.line for r in records] == [3, 4, 7, 9, 10, 11, 12]
    by_line = {r.line: r for r in records}
    assert by_line[4].text == "three\nlines\nlong" and by_line[4].id == "b"
    assert by_line[7].error == "not valid UTF-8"
    assert by_line[11].text == "fine" and by_line[12].text == "the last without a newline"
    usable = {r.line: checked(r, 10_000) for r in records}
    assert usable[9].error == "the text is empty"
    assert usable[10].error == "the text has 140000 characters; at most 10000 are accepted"
    predicted = [line for line, r in usable.items() if r.error is None]
    refused = [line for line, r in usable.items() if r.error is not None]
    assert (predicted, refused) == ([3, 4, 11, 12], [7, 9, 10])
    assert len(predicted) + len(refused) == count  # 4 + 3 == 7


def test_csv_a_record_over_the_limit_is_one_error_and_reading_goes_on():
    data = ("text\nfirst\n" + "x" * 300 + "\n" + '"a quoted\n' + "y" * 150 + "\n" + "z" * 150 + '"\nlast\n').encode()
    records, count = read(CsvRecords, data, max_bytes=200)
    assert [(r.line, r.text, r.error) for r in records] == [
        (2, "first", None),
        (3, None, "the record is longer than 200 bytes"),
        # the quoted record (line 4) outgrows the limit on line 6; reading resumes at line 7
        (4, None, "the record is longer than 200 bytes"),
        (7, "last", None),
    ]
    assert count == 4


def test_csv_header_without_text_is_refused():
    with pytest.raises(BatchInputError, match=r"the CSV header \(line 2\) has no 'text' column; columns: id, body"):
        read(CsvRecords, b"\nid,body\n1,hello\n")
    assert read(CsvRecords, b"")[1] == 0  # an empty file: no records, nothing refused


def test_checked_refuses_what_the_model_may_not_be_given():
    assert checked(Record(1, text="fine"), 10) == Record(1, text="fine")
    assert checked(Record(2, text=" \n"), 10).error == "the text is empty"
    assert checked(Record(3, text="x" * 11), 10).error == "the text has 11 characters; at most 10 are accepted"
    lone = checked(Record(4, text="a\ud800b"), 10)
    assert lone.error == "the text holds a lone surrogate (\\ud800) at character 1: texts must be valid Unicode"
    assert checked(Record(5, error="kept"), 10) == Record(5, error="kept")
