"""Cutting a large batch file into chunks: every cut ends a record, and reading the chunks one by one gives
exactly the records (line numbers, texts, errors) that reading the whole file gives."""

from __future__ import annotations

import io
import json
import random

import pytest

from ferry.runtime.batch import READERS, Lines
from ferry.runtime.chunks import plan

MAX_BYTES = 4096


def jsonl_file(rng: random.Random, records: int) -> bytes:
    lines = []
    for number in range(records):
        kind = rng.random()
        if kind < 0.05:
            lines.append(b"")  # blank: no record
        elif kind < 0.08:
            lines.append(b'{"text": "bad \xff byte"}')
        elif kind < 0.10:
            lines.append(b"[" * 5000)  # over the line cap
        else:
            text = " ".join(rng.choice(["good", "bad", "day", "\u00e9t\u00e9", "\U0001f600"])
                            for _ in range(rng.randint(1, 30)))
            lines.append(json.dumps({"text": text, "id": number}).encode())
    return b"\n".join(lines) + (b"\n" if rng.random() < 0.5 else b"")


def csv_file(rng: random.Random, records: int) -> bytes:
    rows = [b'id,"text"']
    for number in range(records):
        kind = rng.random()
        if kind < 0.05:
            rows.append(b"")
        elif kind < 0.08:
            rows.append(b"%d,bad \xff byte" % number)
        elif kind < 0.25:  # a quoted field over several lines, with quotes inside
            rows.append(b'%d,"first line\nsecond ""quoted"" line\nthird, with a comma"' % number)
        else:
            rows.append(b"%d,plain text %d" % (number, rng.randint(0, 10**6)))
    return b"\n".join(rows) + b"\n"


def records_of(data: bytes, suffix: str, **numbering) -> list[tuple]:
    reader = READERS[suffix](Lines(io.BytesIO(data), MAX_BYTES, block=37, **numbering))
    found = [(record.line, record.text, record.id, record.error) for record in reader]
    assert reader.records == len(found)
    return found


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_chunks_cover_the_file_at_record_ends_and_read_as_the_whole(seed, suffix):
    rng = random.Random(seed)
    data = jsonl_file(rng, 300) if suffix == ".jsonl" else csv_file(rng, 300)
    chunk_bytes = rng.choice([64, 500, 3000])
    cut = plan(io.BytesIO(data), len(data), chunk_bytes, csv=suffix == ".csv", block=rng.choice([7, 64, 1000]))
    assert len(cut.chunks) > 2
    assert cut.chunks[0].start == 0 and cut.chunks[-1].end == len(data)
    for before, after in zip(cut.chunks, cut.chunks[1:], strict=False):
        assert before.end == after.start and before.end - before.start >= chunk_bytes
        assert data[before.end - 1:before.end] == b"\n"
        assert data[:before.end].count(b'"') % 2 == 0  # never inside a quoted CSV field
    for chunk in cut.chunks:
        assert chunk.first_line == data[:chunk.start].count(b"\n") + 1
    whole = records_of(data, suffix)
    pieces = []
    for chunk in cut.chunks:
        body = data[chunk.start:chunk.end]
        if suffix == ".csv" and chunk.index > 0:
            body = data[:cut.header_end] + body
            pieces += records_of(body, suffix, first_line=chunk.first_line, header_lines=cut.header_lines)
        else:
            pieces += records_of(body, suffix, first_line=chunk.first_line)
    assert pieces == whole
    assert len(whole) > 200 and any(error for *_, error in whole)


def test_the_csv_header_is_found_even_when_quoted_over_two_lines():
    data = b'id,"te\nxt"\n1,a\n2,b\n3,c\n'
    cut = plan(io.BytesIO(data), len(data), 4, csv=True, block=3)
    assert (cut.header_end, cut.header_lines) == (data.index(b"1,a"), 2)
    assert [chunk.first_line for chunk in cut.chunks] == [1, 4, 5]


def test_a_file_without_a_newline_is_one_chunk():
    data = b'{"text": "x"}' * 100
    cut = plan(io.BytesIO(data), len(data), 10, csv=False)
    assert [(chunk.start, chunk.end, chunk.first_line) for chunk in cut.chunks] == [(0, len(data), 1)]
