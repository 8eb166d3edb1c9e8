"""Errors about data files: each names the file, the line where it applies, and the problem."""

from __future__ import annotations

from pathlib import Path

from ferry.exceptions import EXIT_USAGE, FerryError


class DataError(FerryError):
    """A data file cannot be used as it is.

    A bad data file is a bad argument of whatever was asked to read it: exit status 2, HTTP 400.
    """

    code = "invalid_data"
    status = 400
    exit_status = EXIT_USAGE

    def __init__(self, path: Path | str, problem: str, line: int | None = None):
        self.path = Path(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {problem}")
