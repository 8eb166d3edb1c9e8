"""ferry.runtime.texts: one set of checks and one wording for every caller (service, predictor, batch, API)."""

from __future__ import annotations

import pytest

from ferry.runtime.batch import Record, checked
from ferry.runtime.exceptions import InvalidInputError, PayloadTooLargeError
from ferry.runtime.texts import check_inputs, check_shape, text_error


@pytest.mark.parametrize(("inputs", "kind", "message"), [
    ([], InvalidInputError, "inputs is empty: give a string or a non-empty list of strings"),
    (["a"] * 4, PayloadTooLargeError, "inputs has 4 texts; at most 3 are accepted per request"),
    (["ok", 3], InvalidInputError, "inputs[1] is int, not a string"),
    (["ok", " \t"], InvalidInputError, "inputs[1] is empty"),
    ("a\ud800", InvalidInputError, "inputs[0] holds a lone surrogate (\\ud800) at character 1: texts must be valid "
                                   "Unicode"),
    (["ok", "x" * 6], PayloadTooLargeError, "inputs[1] has 6 characters; at most 5 are accepted per text"),
])
def test_a_request_s_texts_are_refused_precisely(inputs, kind, message):
    with pytest.raises(kind) as raised:
        check_inputs(inputs, 3, 5)
    assert str(raised.value) == message


def test_a_request_s_texts_within_the_limits_are_kept_as_a_list():
    assert check_inputs("one", 1, 3) == ["one"]
    assert check_inputs(("ok 😀", "x" * 5), 2, 5) == ["ok 😀", "x" * 5]


@pytest.mark.parametrize(("texts", "message"), [
    ("a string", "texts must be a list of strings"),
    ([], "texts is empty: give at least one text"),
    (["ok", None], "texts[1] is NoneType, not a string"),
])
def test_a_model_is_given_a_list_of_strings(texts, message):
    with pytest.raises(InvalidInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_shape(texts)
    assert check_shape([" ", "x"]) == [" ", "x"]  # the shape only: a model encodes a blank text


def test_a_batch_record_is_refused_with_the_same_checks_in_its_own_words():
    assert text_error("fine", "the text", 10) is None
    assert str(text_error("x" * 11, "the text", 10, per_text=False)) == (
        "the text has 11 characters; at most 10 are accepted")
    assert checked(Record(3, text="\n"), 10) == Record(3, error="the text is empty")
    assert checked(Record(4, text="a\udfffb"), 10).error == (
        "the text holds a lone surrogate (\\udfff) at character 1: texts must be valid Unicode")
