"""Errors of the offline build; each message says what failed and, with figures, by how much."""

from __future__ import annotations


class BuildError(Exception):
    """The build cannot go on; nothing is left in the output folder."""


class InvalidBuildConfigError(BuildError):
    """An argument of the build is wrong (bad name, unknown task or arch, missing path, bad threshold)."""


class ModelSourceError(BuildError):
    """The model to build cannot be found or loaded (not a folder, not available offline)."""


class GateFailedError(BuildError):
    """The int8 model is not close enough to the fp32 original; the figures are in the message."""

    def __init__(self, message: str, parity: dict[str, object]):
        super().__init__(message)
        self.parity = parity


class SizeLimitError(BuildError):
    """The function's layers together would exceed what Lambda accepts."""
