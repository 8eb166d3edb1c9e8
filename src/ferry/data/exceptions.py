"""Errors about data files: each names the file, the line where it applies, and the problem."""

from __future__ import annotations

from pathlib import Path


class DataError(Exception):
    """A data file cannot be used as it is."""

    def __init__(self, path: Path | str, problem: str, line: int | None = None):
        self.path = Path(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {problem}")
