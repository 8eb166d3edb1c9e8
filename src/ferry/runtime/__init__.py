"""What runs in Lambda: onnxruntime, tokenizers and numpy only; never torch, transformers or optimum."""

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
from ferry.runtime.predictor import Batch, Predictor

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
