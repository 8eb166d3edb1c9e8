"""Fine-tuning (offline, torch): the step that makes the default model and, later, update candidates."""

from ferry.train.config import InvalidTrainConfigError, TrainConfig, TrainError
from ferry.train.trainer import PREDICTIONS_DIR, REPORT_FILE, TrainResult, train

__all__ = ["PREDICTIONS_DIR", "REPORT_FILE", "InvalidTrainConfigError", "TrainConfig", "TrainError",
           "TrainResult", "train"]
