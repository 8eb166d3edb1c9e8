"""Fine-tuning (offline, torch): the step that makes the default model and, later, update candidates.

The trainer (numpy, and torch when it runs) loads on first use (PEP 562): the build reads training reports
through :mod:`ferry.train.report` without it, and the trainer imports the build's modules in turn.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ferry.train.config import TrainConfig
from ferry.train.exceptions import InvalidTrainConfigError, TrainError, TrainingReportError
from ferry.train.report import TRAINING_REPORT_FILE, TrainingReport

if TYPE_CHECKING:
    from ferry.train.trainer import PREDICTIONS_DIR, REPORT_FILE, TrainResult, train

_LAZY = {name: "ferry.train.trainer" for name in ("PREDICTIONS_DIR", "REPORT_FILE", "TrainResult", "train")}

__all__ = ["PREDICTIONS_DIR", "REPORT_FILE", "TRAINING_REPORT_FILE", "InvalidTrainConfigError", "TrainConfig",
           "TrainError", "TrainResult", "TrainingReport", "TrainingReportError", "train"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
