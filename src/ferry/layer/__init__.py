"""The offline build: Hugging Face model -> verified int8 ONNX Lambda layer. Imports torch only when it runs.

The pipeline (numpy, onnxruntime, and torch when it runs) loads on first use (PEP 562): the settings and errors
import light, so that a command line can show the build's defaults and choices without loading it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ferry.layer.config import (
    ARCHES,
    BuildConfig,
    BuildEnvironment,
    GateThresholds,
    GraphSettings,
    QuantizationSettings,
)
from ferry.layer.exceptions import (
    BuildError,
    GateFailedError,
    InvalidBuildConfigError,
    ModelSourceError,
    SizeLimitError,
)

if TYPE_CHECKING:
    from ferry.layer.pipeline import BuildResult, build_layer

_LAZY = {name: "ferry.layer.pipeline" for name in ("BuildResult", "build_layer")}

__all__ = [
    "ARCHES",
    "BuildConfig",
    "BuildEnvironment",
    "BuildError",
    "BuildResult",
    "GateFailedError",
    "GateThresholds",
    "GraphSettings",
    "InvalidBuildConfigError",
    "ModelSourceError",
    "QuantizationSettings",
    "SizeLimitError",
    "build_layer",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
