"""What runs in Lambda: onnxruntime, tokenizers and numpy only; never torch, transformers or optimum.

Importing the package is light: ``Predictor`` and ``Batch`` (numpy, onnxruntime, tokenizers) are loaded on
first use (PEP 562), so a function that needs only ``ferry.runtime.keys`` or ``ferry.runtime.capture`` (the
authorizer, the capture function) does not pay for them at every cold start. ``from ferry.runtime import
Predictor`` works as before and imports the predictor then.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ferry.runtime.exceptions import (
    FerryRuntimeError,
    IntegrityError,
    InvalidInputError,
    ManifestError,
    ModelNotFoundError,
    UnsupportedTaskError,
)
from ferry.runtime.manifest import (
    Manifest,
    discover_models,
    layer_models_dirs,
    models_search_path,
    resolve_model_dir,
    sha256_file,
)

if TYPE_CHECKING:
    from ferry.runtime.predictor import Batch, Predictor

_LAZY = {"Batch": "ferry.runtime.predictor", "Predictor": "ferry.runtime.predictor"}

__all__ = [
    "Batch",
    "FerryRuntimeError",
    "IntegrityError",
    "InvalidInputError",
    "Manifest",
    "ManifestError",
    "ModelNotFoundError",
    "Predictor",
    "UnsupportedTaskError",
    "discover_models",
    "layer_models_dirs",
    "models_search_path",
    "resolve_model_dir",
    "sha256_file",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups find it without coming here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
