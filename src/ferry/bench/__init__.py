"""`ferry bench`: ferry's int8 Predictor and predict handler against what a user would run instead (the transformers
pipeline on PyTorch, Optimum's ONNX Runtime pipeline), on the same texts, on the same machine, in one run; the local
API under load; and the cost of a million predictions on Lambda beside an always-on SageMaker endpoint.

:func:`run_bench` takes a :class:`BenchConfig` and writes bench.json, bench.md and bench.png. Importing this package
is light: the run, and the candidates' heavy libraries (each in a process of its own), load when used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ferry.bench.config import BenchConfig
from ferry.bench.exceptions import BenchError, CandidateFailedError, InvalidBenchConfigError
from ferry.bench.prices import Prices

if TYPE_CHECKING:
    from ferry.bench.run import run_bench

__all__ = ["BenchConfig", "BenchError", "CandidateFailedError", "InvalidBenchConfigError", "Prices", "run_bench"]


def __getattr__(name: str) -> Any:
    if name != "run_bench":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return import_module("ferry.bench.run").run_bench
