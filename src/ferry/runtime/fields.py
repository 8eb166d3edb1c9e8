"""Typed reads of a JSON object, field by field, for the contracts Ferry writes and reads back (the layer
manifest, the training report, their metrics).

A reader that finds a field of the wrong type says which file and which field (its full path, such as
``parity.texts``) and what it holds, in the error type of the contract it reads. Every key read is
remembered, so that what is left (:meth:`JsonFields.unknown`) is exactly what this version does not know: a
newer writer's fields, which the contracts keep and write back unchanged.

This module is shipped in the runtime layer: it imports nothing.
"""

from __future__ import annotations

from typing import Any

_SHOWN = 60  # characters of a bad value quoted in an error


def show(value: Any) -> str:
    """A value as an error quotes it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class JsonFields:
    """One JSON object of a contract, read with checks; errors are ``error(f"{source}: {path} must be ...")``."""

    def __init__(self, data: Any, source: str, where: str = "", *, error: type[Exception] = ValueError):
        self.source = source
        self.where = where
        self.error_type = error
        if not isinstance(data, dict):
            what = where or "the document"
            raise error(f"{source}: {what} must be a JSON object, got {type(data).__name__}")
        self.data: dict[str, Any] = data
        self.read: set[str] = set()

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def error(self, key: str, expected: str) -> Exception:
        return self.error_type(f"{self.source}: {self.path(key)} must be {expected}, got {show(self.data.get(key))}")

    def fail(self, problem: str) -> Exception:
        """An error about this object as a whole (``problem`` names what is wrong)."""
        where = f"{self.where}: " if self.where else ""
        return self.error_type(f"{self.source}: {where}{problem}")

    def nested(self, key: str) -> JsonFields:
        """The object under ``key``, read with the same source and error type."""
        return JsonFields(self.raw(key), self.source, self.path(key), error=self.error_type)

    def raw(self, key: str) -> Any:
        self.read.add(key)
        return self.data.get(key)

    def require(self, *keys: str) -> None:
        missing = [key for key in keys if key not in self.data]
        if missing:
            where = f" of {self.where}" if self.where else ""
            raise self.error_type(f"{self.source}: missing field(s){where} {', '.join(missing)}")

    def text(self, key: str) -> str | None:
        value = self.raw(key)
        if value is not None and not isinstance(value, str):
            raise self.error(key, "a string")
        return value

    def required_text(self, key: str) -> str:
        value = self.raw(key)
        if not isinstance(value, str) or not value:
            raise self.error(key, "a non-empty string")
        return value

    def integer(self, key: str, minimum: int = 0) -> int | None:
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise self.error(key, f"an integer >= {minimum}")
        return value

    def required_integer(self, key: str, minimum: int = 0) -> int:
        value = self.integer(key, minimum)
        if value is None:
            raise self.error(key, f"an integer >= {minimum}")
        return value

    def number(self, key: str) -> float | None:
        value = self.raw(key)
        if value is None:
            return None
        if not _is_number(value):
            raise self.error(key, "a number")
        return float(value)

    def required_number(self, key: str) -> float:
        value = self.number(key)
        if value is None:
            raise self.error(key, "a number")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, "true or false")
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        value = self.raw(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.error(key, "a list of strings")
        return tuple(value)

    def numbers(self, key: str) -> tuple[float, ...]:
        value = self.raw(key)
        if not isinstance(value, list) or not all(_is_number(item) for item in value):
            raise self.error(key, "a list of numbers")
        return tuple(float(item) for item in value)

    def counts(self, key: str) -> tuple[int, ...]:
        value = self.raw(key)
        if not isinstance(value, list) or not all(_is_count(item) for item in value):
            raise self.error(key, "a list of counts (integers >= 0)")
        return tuple(value)

    def count_rows(self, key: str) -> tuple[tuple[int, ...], ...]:
        value = self.raw(key)
        if not isinstance(value, list) or not all(
            isinstance(row, list) and all(_is_count(item) for item in row) for row in value
        ):
            raise self.error(key, "a list of rows of counts")
        return tuple(tuple(row) for row in value)

    def number_map(self, key: str) -> dict[str, float] | None:
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, dict) or not all(_is_number(item) for item in value.values()):
            raise self.error(key, "an object of name -> number")
        return {str(name): float(item) for name, item in value.items()}

    def obj(self, key: str) -> dict[str, Any] | None:
        """A JSON object this version keeps as it is (its inside is the writer's business)."""
        value = self.raw(key)
        if value is not None and not isinstance(value, dict):
            raise self.error(key, "a JSON object")
        return value

    def objects(self, key: str) -> tuple[dict[str, Any], ...]:
        """A list of JSON objects kept as they are."""
        value = self.raw(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise self.error(key, "a list of JSON objects")
        return tuple(value)

    def unknown(self) -> dict[str, Any]:
        """The keys no read asked for: a newer writer's, kept so that they survive a round trip."""
        return {key: value for key, value in self.data.items() if key not in self.read}
