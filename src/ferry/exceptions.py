"""The one base class of every error Ferry raises on purpose.

Each package keeps its own ``exceptions.py`` with narrow types under :class:`FerryError`. A type carries what
its callers need to answer for it, so that no caller keeps a table of types:

- ``code``: a stable, machine-readable name (the HTTP API's ``error.code``, a CLI's ``--json`` output);
- ``status``: the HTTP status when the error reaches the API (500 unless the type says otherwise);
- ``exit_status``: the ``ferry`` command's exit status, 1 (the work failed) or 2 (bad arguments or config).

Messages say what is wrong and what to do, in the library's terms: they never name a CLI flag. An error about one
argument of a library call names it in ``field`` (the argument's name, e.g. ``max_length``) and its message is
``f"{field} {detail}"``; a command line that took the argument as a flag shows ``detail`` after the flag.

This module is shipped in the runtime layer: it imports nothing.
"""

from __future__ import annotations

from typing import ClassVar

EXIT_FAILED = 1
EXIT_USAGE = 2


class FerryError(Exception):
    """Base class of every error Ferry raises on purpose."""

    code: ClassVar[str] = "ferry_error"
    status: ClassVar[int] = 500
    exit_status: ClassVar[int] = EXIT_FAILED

    def __init__(self, message: str = "", *, field: str | None = None):
        self.field = field  # the library argument at fault, if one is
        self.detail = message  # the message without the argument's name
        super().__init__(f"{field} {message}" if field else message)

    def __reduce__(self) -> tuple[object, ...]:
        # Exception pickles its args only: keep field and detail apart across processes
        return (_rebuild, (type(self), self.detail, self.field, self.__dict__))


def _rebuild(kind: type[FerryError], detail: str, field: str | None, state: dict[str, object]) -> FerryError:
    error = kind.__new__(kind)
    FerryError.__init__(error, detail, field=field)
    error.__dict__.update(state)
    return error
