"""Labelled text: user files (CSV, JSONL) read strictly, and the bundled tweets corpus."""

from ferry.data.exceptions import DataError
from ferry.data.readers import Example, read_examples

__all__ = ["DataError", "Example", "read_examples"]
