"""The wordings of ferry.runtime.texts that the other texts tests reach only in part."""

from __future__ import annotations

import pytest

from ferry.runtime.exceptions import InvalidInputError
from ferry.runtime.texts import check_shape, lone_surrogate, not_text


def test_a_value_where_texts_go_is_named_as_an_item_or_as_the_whole():
    assert not_text("inputs[2]", item=True) == "inputs[2] must be a string"
    assert not_text("inputs", item=False) == "inputs must be a string or a list of strings"


@pytest.mark.parametrize(("value", "kind"), [(1, "int"), (b"x", "bytes"), ([], "list")])
def test_a_model_is_told_the_type_of_what_is_not_a_string(value, kind):
    with pytest.raises(InvalidInputError) as caught:
        check_shape(["ok", value], where="batch")
    assert str(caught.value) == f"batch[1] is {kind}, not a string"


def test_a_lone_surrogate_is_found_in_any_text_and_an_ascii_one_holds_none():
    assert lone_surrogate("plain ascii") is None
    assert lone_surrogate("é\udc80") == ("holds a lone surrogate (\\udc80) at character 1: texts must be valid "
                                        "Unicode")
