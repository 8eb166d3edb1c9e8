"""Narrow error types of the runtime. Messages say what is wrong and what to do; callers map types to status."""

from __future__ import annotations


class FerryRuntimeError(Exception):
    """Base class of every error the runtime raises on purpose."""


class ModelNotFoundError(FerryRuntimeError):
    """No model folder of that name exists in the models search path."""


class ManifestError(FerryRuntimeError):
    """A manifest is missing, unreadable, or does not describe a usable model."""


class IntegrityError(FerryRuntimeError):
    """A model file is missing or its sha256 does not match the manifest."""


class InvalidInputError(FerryRuntimeError):
    """The texts or options handed to a Predictor cannot be used (empty list, non-string, bad option)."""


class UnsupportedTaskError(FerryRuntimeError):
    """The model was asked for something its task does not do (e.g. classify with an embedder)."""
