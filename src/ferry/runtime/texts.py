"""What a text must be to be given to a model, and the one wording of each way it can fail.

Every caller checks texts here: the service (a request's ``inputs``), the predictor (``texts``, their shape
only), the batch function (``the text`` of a record), and the API, whose request models refuse the same
texts before any work and word pydantic's errors with the messages below. A caller names what it checks
(`where`); the limits come from :class:`ferry.runtime.settings.Settings`.

The checks of one text, in order: a string, not only whitespace, valid Unicode (no lone surrogate), at most
the characters allowed. Light: no third-party import.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ferry.runtime.exceptions import FerryRuntimeError, InvalidInputError, PayloadTooLargeError

_SURROGATE = re.compile("[\ud800-\udfff]")  # what JSON's \ud800-style escapes leave when one comes unpaired


# -- the messages -----------------------------------------------------------------------------------------------

def lone_surrogate(text: str) -> str | None:
    """Why `text` cannot be given to a model when it holds a lone surrogate (no UTF-8 encodes one); else None."""
    found = None if text.isascii() else _SURROGATE.search(text)
    if found is None:
        return None
    return (f"holds a lone surrogate (\\u{ord(found.group()):04x}) at character {found.start()}: texts must be "
            "valid Unicode")


def no_texts(where: str, *, one_text: bool = True) -> str:
    """An empty list, where one text (`one_text`) or a list of texts is accepted."""
    return f"{where} is empty: give " + ("a string or a non-empty list of strings" if one_text else "at least one text")


def not_a_list(where: str) -> str:
    return f"{where} must be a list of strings"


def not_a_string(where: str, value: object) -> str:
    return f"{where} is {type(value).__name__}, not a string"


def not_text(where: str, *, item: bool) -> str:
    """A value of the wrong type where texts go (the API's validation, which knows no value's type by name): an
    `item` of a list, or the whole of ``inputs``."""
    return f"{where} must be a string" if item else f"{where} must be a string or a list of strings"


def blank_only(where: str) -> str:
    """A text of whitespace only, as the API's validation finds it (by pattern)."""
    return f"{blank(where)} (whitespace only)"


def blank(where: str) -> str:
    return f"{where} is empty"


def too_many_texts(where: str, count: object, limit: object) -> str:
    return f"{where} has {count} texts; at most {limit} are accepted per request"


def too_many_chars(where: str, count: object, limit: object, *, per_text: bool = True) -> str:
    """Over the characters of a text; `per_text` says the limit is per text of a request (a batch record is one
    text, and its message says so without)."""
    return f"{where} has {count} characters; at most {limit} are accepted" + (" per text" if per_text else "")


def too_many_tokens(where: str, count: int, limit: int) -> str:
    return f"{where} has {count} tokens, over the model's {limit}; send shorter text or truncate=true"


# -- the checks -------------------------------------------------------------------------------------------------

def text_error(text: object, where: str, max_chars: int, *, per_text: bool = True) -> FerryRuntimeError | None:
    """Why `text` cannot be given to a model, as the error to raise (or to record), naming it `where`; None
    when it can be."""
    if not isinstance(text, str):
        return InvalidInputError(not_a_string(where, text))
    if not text.strip():
        return InvalidInputError(blank(where))
    surrogate = lone_surrogate(text)
    if surrogate is not None:
        return InvalidInputError(f"{where} {surrogate}")
    if len(text) > max_chars:
        return PayloadTooLargeError(too_many_chars(where, len(text), max_chars, per_text=per_text))
    return None


def check_inputs(inputs: str | Sequence[str], max_inputs: int, max_chars: int, where: str = "inputs") -> list[str]:
    """The texts of a request (one string, or a list of them), or the precise error: empty, too many, not
    strings, blank, not valid Unicode, too long."""
    texts = [inputs] if isinstance(inputs, str) else list(inputs)
    if not texts:
        raise InvalidInputError(no_texts(where))
    if len(texts) > max_inputs:
        raise PayloadTooLargeError(too_many_texts(where, len(texts), max_inputs))
    for index, text in enumerate(texts):
        error = text_error(text, f"{where}[{index}]", max_chars)
        if error is not None:
            raise error
    return texts


def check_shape(texts: Sequence[str], where: str = "texts") -> list[str]:
    """A list of strings, at least one, for a model to encode: the shape, not the content (a model encodes a
    blank text; the service refuses one)."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise InvalidInputError(not_a_list(where))
    if not texts:
        raise InvalidInputError(no_texts(where, one_text=False))
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInputError(not_a_string(f"{where}[{index}]", text))
    return list(texts)
