"""The one base class of every error Ferry raises on purpose.

Each package keeps its own ``exceptions.py`` with narrow types under :class:`FerryError`. A type carries what
its callers need to answer for it, so that no caller keeps a table of types:

- ``code``: a stable, machine-readable name (the HTTP API's ``error.code``, a CLI's ``--json`` output);
- ``status``: the HTTP status when the error reaches the API (500 unless the type says otherwise);
- ``exit_status``: the ``ferry`` command's exit status, 1 (the work failed) or 2 (bad arguments or config).

Messages say what is wrong and what to do, in the library's terms: they never name a CLI flag (the CLI adds
the flag when it knows which one).

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
