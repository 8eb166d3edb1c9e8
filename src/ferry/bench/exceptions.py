"""Errors of `ferry bench`. An error about one argument of :class:`~ferry.bench.config.BenchConfig` carries it in
``field`` (the command line shows its flag instead)."""

from __future__ import annotations

from ferry.exceptions import EXIT_USAGE, FerryError


class BenchError(FerryError):
    """The bench cannot go on."""

    code = "bench_failed"


class InvalidBenchConfigError(BenchError):
    """An argument of the bench is wrong: an unknown model, a missing folder, a count under 1."""

    code = "invalid_bench_config"
    exit_status = EXIT_USAGE


class CandidateFailedError(BenchError):
    """One candidate's process failed; the message ends with the last lines it wrote to stderr."""

    code = "bench_candidate_failed"
