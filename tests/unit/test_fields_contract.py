"""JsonFields, the typed reader under every contract Ferry reads back: each check, at its bounds, and the exact
error it raises (which file, which field by its full path, what it must be, what it holds)."""

from __future__ import annotations

import pytest

from ferry.runtime.fields import JsonFields, show


class ContractError(Exception):
    """The error type a contract passes in: JsonFields must raise it, not its own."""


def reader(data: object, where: str = "") -> JsonFields:
    return JsonFields(data, "report.json", where, error=ContractError)


def refused(call, message: str) -> None:
    with pytest.raises(ContractError) as caught:
        call()
    assert str(caught.value) == message


def test_show_quotes_a_value_whole_up_to_60_characters_then_cuts_it():
    assert show("x" * 58) == repr("x" * 58)  # 60 characters with the quotes: whole
    assert show("x" * 59) == repr("x" * 59)[:57] + "..."  # 61: cut to 57 and "..."
    assert len(show("y" * 500)) == 60
    assert show([1, 2]) == "[1, 2]"


def test_the_document_must_be_an_object_named_by_where_or_as_the_document():
    refused(lambda: reader([1]), "report.json: the document must be a JSON object, got list")
    refused(lambda: reader("x", "parity"), "report.json: parity must be a JSON object, got str")
    with pytest.raises(ValueError, match=r"^report\.json: the document must be a JSON object, got NoneType$"):
        JsonFields(None, "report.json")  # the default error type


def test_paths_errors_and_failures_name_the_field_in_full():
    top, inner = reader({"a": 1}), reader({"a": 1}, "parity")
    assert (top.path("a"), inner.path("a")) == ("a", "parity.a")
    assert str(top.error("a", "text")) == "report.json: a must be text, got 1"
    assert str(inner.error("b", "text")) == "report.json: parity.b must be text, got None"
    assert str(top.fail("two edges short")) == "report.json: two edges short"
    assert str(inner.fail("two edges short")) == "report.json: parity: two edges short"
    assert isinstance(top.fail("x"), ContractError) and isinstance(top.error("a", "x"), ContractError)


def test_require_lists_every_missing_field_of_the_object():
    reader({"a": 1}).require("a")
    refused(lambda: reader({"a": 1}).require("a", "b", "c"), "report.json: missing field(s) b, c")
    refused(lambda: reader({}, "training").require("base"), "report.json: missing field(s) of training base")


def test_nested_objects_keep_the_source_the_path_and_the_error_type():
    fields = reader({"load": {"import_s": "slow"}, "bad": [1]}, "manifest")
    load = fields.nested("load")
    assert (load.source, load.where, load.error_type, load.data) == ("report.json", "manifest.load", ContractError,
                                                                     {"import_s": "slow"})
    refused(lambda: load.number("import_s"), "report.json: manifest.load.import_s must be a number, got 'slow'")
    refused(lambda: fields.nested("bad"), "report.json: manifest.bad must be a JSON object, got list")
    assert fields.unknown() == {}  # both were read


def test_text_and_required_text():
    fields = reader({"s": "ok", "n": 3, "e": ""})
    assert (fields.text("s"), fields.text("absent")) == ("ok", None)
    refused(lambda: fields.text("n"), "report.json: n must be a string, got 3")
    assert fields.required_text("s") == "ok"
    refused(lambda: fields.required_text("e"), "report.json: e must be a non-empty string, got ''")
    refused(lambda: fields.required_text("n"), "report.json: n must be a non-empty string, got 3")


def test_integers_at_their_minimum_and_below_it():
    fields = reader({"zero": 0, "one": 1, "minus": -1, "flag": True, "real": 1.0})
    assert (fields.integer("zero"), fields.integer("absent")) == (0, None)
    assert fields.integer("one", minimum=1) == 1
    refused(lambda: fields.integer("zero", minimum=1), "report.json: zero must be an integer >= 1, got 0")
    refused(lambda: fields.integer("minus"), "report.json: minus must be an integer >= 0, got -1")
    refused(lambda: fields.integer("flag"), "report.json: flag must be an integer >= 0, got True")
    refused(lambda: fields.integer("real"), "report.json: real must be an integer >= 0, got 1.0")
    assert fields.required_integer("zero") == 0 and fields.required_integer("one", 1) == 1
    refused(lambda: fields.required_integer("zero", 1), "report.json: zero must be an integer >= 1, got 0")
    refused(lambda: fields.required_integer("absent", 2), "report.json: absent must be an integer >= 2, got None")


def test_numbers_are_floats_and_never_booleans():
    fields = reader({"i": 2, "f": 0.5, "b": False, "s": "1"})
    assert fields.number("i") == 2.0 and isinstance(fields.number("i"), float)
    assert (fields.number("f"), fields.number("absent")) == (0.5, None)
    refused(lambda: fields.number("b"), "report.json: b must be a number, got False")
    refused(lambda: fields.number("s"), "report.json: s must be a number, got '1'")
    assert fields.required_number("f") == 0.5
    refused(lambda: fields.required_number("absent"), "report.json: absent must be a number, got None")
    refused(lambda: fields.required_number("s"), "report.json: s must be a number, got '1'")


def test_a_flag_is_a_boolean_or_its_default():
    fields = reader({"t": True, "f": False, "n": 1})
    assert (fields.flag("t", False), fields.flag("f", True)) == (True, False)
    assert (fields.flag("absent", True), fields.flag("absent", False)) == (True, False)
    refused(lambda: fields.flag("n", False), "report.json: n must be true or false, got 1")


def test_lists_of_texts_numbers_and_counts():
    fields = reader({"texts": ["a", "b"], "mixed": ["a", 1], "numbers": [1, 2.5], "flags": [1, True],
                     "counts": [0, 3], "negative": [1, -1], "empty": [], "text": "a"})
    assert (fields.texts("texts"), fields.texts("absent"), fields.texts("empty")) == (("a", "b"), (), ())
    refused(lambda: fields.texts("mixed"), "report.json: mixed must be a list of strings, got ['a', 1]")
    refused(lambda: fields.texts("text"), "report.json: text must be a list of strings, got 'a'")
    assert fields.numbers("numbers") == (1.0, 2.5) and fields.numbers("empty") == ()
    refused(lambda: fields.numbers("flags"), "report.json: flags must be a list of numbers, got [1, True]")
    refused(lambda: fields.numbers("text"), "report.json: text must be a list of numbers, got 'a'")
    refused(lambda: fields.numbers("absent"), "report.json: absent must be a list of numbers, got None")
    assert fields.counts("counts") == (0, 3)
    refused(lambda: fields.counts("negative"),
            "report.json: negative must be a list of counts (integers >= 0), got [1, -1]")
    refused(lambda: fields.counts("flags"),
            "report.json: flags must be a list of counts (integers >= 0), got [1, True]")
    refused(lambda: fields.counts("text"), "report.json: text must be a list of counts (integers >= 0), got 'a'")


def test_rows_of_counts():
    fields = reader({"matrix": [[0, 1], [2, 3]], "ragged": [[1], []], "negative": [[0, -1]], "flat": [1, 2],
                     "flags": [[True]], "text": "ab"})
    assert fields.count_rows("matrix") == ((0, 1), (2, 3))
    assert fields.count_rows("ragged") == ((1,), ())
    for key in ("negative", "flat", "flags", "text", "absent"):
        with pytest.raises(ContractError) as caught:
            fields.count_rows(key)
        assert str(caught.value).startswith(f"report.json: {key} must be a list of rows of counts, got ")


def test_maps_of_numbers_objects_and_lists_of_objects():
    fields = reader({"recall": {"neg": 1, "pos": 0.5}, "bad": {"neg": "x"}, "flagged": {"neg": True},
                     "list": [1], "obj": {"k": [1]}, "objects": [{"a": 1}, {}], "mixed": [{"a": 1}, 2]})
    recall = fields.number_map("recall")
    assert recall == {"neg": 1.0, "pos": 0.5} and isinstance(recall["neg"], float)
    assert fields.number_map("absent") is None
    refused(lambda: fields.number_map("bad"), "report.json: bad must be an object of name -> number, got {'neg': 'x'}")
    refused(lambda: fields.number_map("flagged"),
            "report.json: flagged must be an object of name -> number, got {'neg': True}")
    refused(lambda: fields.number_map("list"), "report.json: list must be an object of name -> number, got [1]")
    assert fields.obj("obj") == {"k": [1]} and fields.obj("absent") is None
    refused(lambda: fields.obj("list"), "report.json: list must be a JSON object, got [1]")
    assert fields.objects("objects") == ({"a": 1}, {}) and fields.objects("absent") == ()
    refused(lambda: fields.objects("mixed"), "report.json: mixed must be a list of JSON objects, got [{'a': 1}, 2]")
    refused(lambda: fields.objects("obj"), "report.json: obj must be a list of JSON objects, got {'k': [1]}")


def test_unknown_is_exactly_what_no_read_asked_for():
    fields = reader({"a": 1, "b": 2, "c": 3, "d": None})
    fields.raw("a")
    fields.text("absent")
    assert fields.unknown() == {"b": 2, "c": 3, "d": None}
    fields.number("b")
    assert fields.unknown() == {"c": 3, "d": None}
    assert fields.read == {"a", "absent", "b"}
