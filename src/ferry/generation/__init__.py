"""The text-generation build: a causal language model -> the model.tar.gz of a SageMaker GPU endpoint served by
AWS's LMI container (vLLM), checked by a smoke generation and a parity check before it is accepted.

Models too large for Lambda go here instead of into a layer. torch and transformers load only when a build or a
conversion runs: the settings, the errors, the manifest and the source lookup import light (PEP 562).

For tests and tools that need the real SmolLM2 as a Hugging Face folder: :func:`smollm2_folder`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ferry.generation.config import (
    CONTAINERS,
    DEFAULT_CONVERTED_DIR,
    DEFAULT_DTYPE,
    DEFAULT_ENDPOINTS_DIR,
    DTYPES,
    TEXT_GENERATION,
    GenerationBuildConfig,
)
from ferry.generation.exceptions import SmokeFailedError
from ferry.generation.manifest import EndpointManifest
from ferry.generation.source import SMOLLM2, CausalLMSource, gguf_to_folder, resolve_causal_lm, smollm2_folder

if TYPE_CHECKING:
    from ferry.generation.pipeline import GenerationBuildResult, build_endpoint_model

_LAZY = {name: "ferry.generation.pipeline" for name in ("GenerationBuildResult", "build_endpoint_model")}

__all__ = [
    "CONTAINERS",
    "DEFAULT_CONVERTED_DIR",
    "DEFAULT_DTYPE",
    "DEFAULT_ENDPOINTS_DIR",
    "DTYPES",
    "SMOLLM2",
    "TEXT_GENERATION",
    "CausalLMSource",
    "EndpointManifest",
    "GenerationBuildConfig",
    "GenerationBuildResult",
    "SmokeFailedError",
    "build_endpoint_model",
    "gguf_to_folder",
    "resolve_causal_lm",
    "smollm2_folder",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
