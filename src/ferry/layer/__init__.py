"""The offline build: Hugging Face model -> verified int8 ONNX Lambda layer. Imports torch only when it runs."""

from ferry.layer.config import ARCHES, BuildConfig, GateThresholds, QuantizationSettings
from ferry.layer.exceptions import (
    BuildError,
    GateFailedError,
    InvalidBuildConfigError,
    ModelSourceError,
    SizeLimitError,
)
from ferry.layer.pipeline import BuildResult, build_layer

__all__ = [
    "ARCHES",
    "BuildConfig",
    "BuildError",
    "BuildResult",
    "GateFailedError",
    "GateThresholds",
    "InvalidBuildConfigError",
    "ModelSourceError",
    "QuantizationSettings",
    "SizeLimitError",
    "build_layer",
]
