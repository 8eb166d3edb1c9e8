"""Errors of `ferry train` and of reading what it wrote.

Messages speak of training's arguments by their :class:`~ferry.train.config.TrainConfig` names. An error
about one argument carries it in ``field``, and its message is ``f"{field} {detail}"``: a command line that
gave the argument as a flag shows ``detail`` after the flag instead.
"""

from __future__ import annotations

from ferry.exceptions import EXIT_USAGE, FerryError


class TrainError(FerryError):
    """Training cannot start or cannot finish; nothing is left in the output folder."""

    code = "train_failed"


class InvalidTrainConfigError(TrainError):
    """An argument of training is wrong (a number out of range, a missing data file, an unusable base model)."""

    code = "invalid_train_config"
    exit_status = EXIT_USAGE


class TrainingReportError(TrainError):
    """A training report cannot be read: not JSON, a field missing or of the wrong type, or a newer version."""

    code = "training_report_invalid"
