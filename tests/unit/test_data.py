from __future__ import annotations

import pytest

from ferry.data import DataError, read_examples
from ferry.data.corpus import load_corpus


def write(tmp_path, name: str, content: str | bytes):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def test_csv_with_labels(tmp_path):
    path = write(tmp_path, "a.csv", 'text,label\n"hello, world",positive\nbad day,negative\n')
    examples = read_examples(path)
    assert [(e.text, e.label, e.line) for e in examples] == [
        ("hello, world", "positive", 2),
        ("bad day", "negative", 3),
    ]


def test_jsonl_with_custom_columns(tmp_path):
    path = write(tmp_path, "a.jsonl", '{"body": "fine", "y": "positive"}\n\n{"body": "meh", "y": "negative"}\n')
    examples = read_examples(path, text_column="body", label_column="y")
    assert [(e.text, e.label, e.line) for e in examples] == [("fine", "positive", 1), ("meh", "negative", 3)]


def test_text_file_has_no_labels(tmp_path):
    examples = read_examples(write(tmp_path, "a.txt", "one\n\ntwo\n"))
    assert [(e.text, e.label) for e in examples] == [("one", None), ("two", None)]


@pytest.mark.parametrize(
    ("name", "content", "kwargs", "message"),
    [
        ("missing.csv", None, {}, "missing.csv: no such file"),
        ("empty.csv", "", {}, "empty.csv: is empty"),
        ("blank.jsonl", "\n  \n", {}, "blank.jsonl: is empty"),
        ("header.csv", "text,label\n", {}, "header.csv: holds no rows"),
        ("nocol.csv", "body,label\nx,positive\n", {},
         "nocol.csv:1: no column 'text' in the header (columns: body, label)"),
        ("ragged.csv", "text,label\na,positive\nb,negative,extra\n", {}, "ragged.csv:3: ragged row: 3 fields"),
        ("bad.jsonl", '{"text": "a"}\n{"text": \n', {}, "bad.jsonl:2: not valid JSON"),
        ("list.jsonl", '["a"]\n', {}, "list.jsonl:1: expected a JSON object, got list"),
        ("notext.jsonl", '{"body": "a"}\n', {}, "notext.jsonl:1: no field 'text'"),
        ("emptytext.csv", "text,label\n ,positive\n", {}, "emptytext.csv:2: the text is empty"),
        ("half.csv", "text,label\na,positive\nb,\n", {}, "half.csv:3: no 'label' on this row; label every row or none"),
        ("unknown.csv", "text,label\na,angry\n", {"allowed_labels": {"negative", "positive"}},
         "unknown.csv:2: unknown label 'angry'; the model knows negative, positive"),
        ("data.parquet", "x", {}, "unknown format '.parquet'"),
        ("needs.csv", "text\na\n", {"require_labels": True}, "needs.csv:2: no 'label' on this row"),
    ],
)
def test_malformed_files_name_file_line_and_problem(tmp_path, name, content, kwargs, message):
    path = tmp_path / name if content is None else write(tmp_path, name, content)
    with pytest.raises(DataError) as caught:
        read_examples(path, **kwargs)
    assert message in str(caught.value)


def test_user_files_must_be_utf8(tmp_path):
    path = write(tmp_path, "latin1.csv", "text,label\nok,positive\ncaf\xe9,negative\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.csv:3: not valid UTF-8 \(byte 0xe9"):
        read_examples(path)


def test_a_folder_is_refused(tmp_path):
    with pytest.raises(DataError, match="is a folder"):
        read_examples(tmp_path)


def test_bundled_corpus_is_repaired_and_counted():
    corpus = load_corpus()
    labels = {example.label for example in corpus.examples}
    assert labels == {"negative", "positive"}
    assert len(corpus.examples) == 16186 + 6954  # every negative and positive row of the file
    assert corpus.repaired_rows == 4934  # the rows with broken bytes, as measured in STACK.md
    assert not any("\ufffd" in example.text for example in corpus.examples)
    three = load_corpus(labels=("negative", "neutral", "positive"))
    assert len(three.examples) == 38158


def test_a_data_error_is_a_ferry_error_about_a_bad_argument(tmp_path):
    from ferry.exceptions import FerryError

    with pytest.raises(FerryError) as caught:
        read_examples(tmp_path / "missing.csv")
    assert isinstance(caught.value, DataError)
    assert (caught.value.code, caught.value.exit_status, caught.value.status) == ("invalid_data", 2, 400)
    assert caught.value.path == tmp_path / "missing.csv" and caught.value.line is None
