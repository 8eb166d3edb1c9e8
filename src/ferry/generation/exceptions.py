"""Errors of the text-generation build. The build shares the layer build's types (a bad argument, a model that
cannot be found or loaded, a parity gate that fails: :mod:`ferry.layer.exceptions`), so that the command line
says them the same way; what only this build does has its own type here."""

from __future__ import annotations

from ferry.layer.exceptions import BuildError, GateFailedError, InvalidBuildConfigError, ModelSourceError

__all__ = ["BuildError", "GateFailedError", "InvalidBuildConfigError", "ModelSourceError", "SmokeFailedError"]


class SmokeFailedError(BuildError):
    """The packaged model loads but generates no text: its files do not make a working model."""

    code = "smoke_failed"

    def __init__(self, message: str, smoke: dict[str, object]):
        super().__init__(message)
        self.smoke = smoke
