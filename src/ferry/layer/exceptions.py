"""Errors of the offline build; each message says what failed and, with figures, by how much.

Messages speak of the build's own arguments by their :class:`~ferry.layer.config.BuildConfig` names. An
error about one argument carries it in ``field``, and its message is ``f"{field} {detail}"``: a command line
that gave the argument as a flag shows ``detail`` after the flag instead.
"""

from __future__ import annotations

from ferry.exceptions import EXIT_USAGE, FerryError


class BuildError(FerryError):
    """The build cannot go on; nothing is left in the output folder."""

    code = "build_failed"


class InvalidBuildConfigError(BuildError):
    """An argument of the build is wrong (bad name, unknown task or arch, missing path, bad threshold)."""

    code = "invalid_build_config"
    exit_status = EXIT_USAGE


class ModelSourceError(BuildError):
    """The model to build cannot be found or loaded (not a folder, not available offline)."""

    code = "model_source_unavailable"


class GateFailedError(BuildError):
    """The int8 model is not close enough to the fp32 original; the figures are in the message."""

    code = "gate_failed"

    def __init__(self, message: str, parity: dict[str, object]):
        super().__init__(message)
        self.parity = parity


class SizeLimitError(BuildError):
    """The function's layers together would exceed what Lambda accepts."""

    code = "size_limit_exceeded"
