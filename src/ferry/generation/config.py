"""The settings of a text-generation build, validated once, and the facts it relies on.

A text-generation model is too large for Lambda: it is packaged for a SageMaker real-time GPU endpoint instead of
a layer, so its output folder (``build/endpoints``) is not the layers folder: a text-generation artifact under
``layers/model`` would be taken for a layer by model discovery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ferry.layer.config import BuildEnvironment
from ferry.layer.exceptions import InvalidBuildConfigError
from ferry.runtime.constants import MODEL_NAME_RE
from ferry.runtime.constants import TEXT_GENERATION as TEXT_GENERATION  # the task: the runtime's, re-exported

DEFAULT_ENDPOINTS_DIR = Path("build/endpoints")  # where `ferry build --task text-generation` writes
DEFAULT_CONVERTED_DIR = Path("build/models")  # where a GGUF source is converted to a Hugging Face folder, once

# The dtypes the artifact can be written in, and why each is chosen (the manifest records the reason).
DTYPE_REASONS = {
    "bfloat16": "what LMI serves on GPU (g5, g6, p4 and newer): fp32's range at half its size, the dtype most "
                "current LLMs are trained in; CPUs compute in float32 from it",
    "float16": "for GPUs without bf16 (g4dn's T4): half of fp32's size, but fp16's narrow range can overflow the "
               "activations of a model trained in bf16",
    "float32": "the de-quantized weights exactly, at twice the size and half the GPU throughput of bf16",
}
DTYPES = tuple(DTYPE_REASONS)
DEFAULT_DTYPE = "bfloat16"
CONTAINERS = ("lmi",)  # serving containers the artifact can target (ferry.generation.lmi)


@dataclass(frozen=True)
class GenerationBuildConfig:
    """What `ferry build --task text-generation` takes: the model, where the artifact goes, and its gate.

    ``min_agreement`` is the share of teacher-forced next tokens on which the packaged weights (as the endpoint
    loads them) and the fp32 source pick the same argmax. bf16 measured 0.995 on SmolLM2-135M; a corrupted
    tensor measured 0.56. ``parity_texts`` fixed sentences are compared (each one forward pass of each model).
    """

    model: str
    out: Path = DEFAULT_ENDPOINTS_DIR
    name: str | None = None
    dtype: str = DEFAULT_DTYPE
    container: str = "lmi"
    max_model_len: int | None = None  # the serving context; None: the model's own (config.json)
    max_rolling_batch_size: int = 64  # LMI's vLLM quick start for one GPU; its own default is 256
    min_agreement: float = 0.9
    parity_texts: int = 16
    smoke_tokens: int = 16
    converted_dir: Path = DEFAULT_CONVERTED_DIR
    environment: BuildEnvironment = field(default_factory=BuildEnvironment.from_env)

    def __post_init__(self) -> None:
        if self.name is not None and not MODEL_NAME_RE.fullmatch(self.name):
            raise InvalidBuildConfigError(
                f"bad name {self.name!r}: lowercase letters, digits and '-', starting with a letter or digit, "
                "at most 63 characters"
            )
        if self.dtype not in DTYPES:
            raise InvalidBuildConfigError(f"must be one of {', '.join(DTYPES)}, got {self.dtype!r}", field="dtype")
        if self.container not in CONTAINERS:
            raise InvalidBuildConfigError(f"must be one of {', '.join(CONTAINERS)}, got {self.container!r}",
                                          field="container")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise InvalidBuildConfigError(f"must be a fraction in [0, 1], got {self.min_agreement}",
                                          field="min_agreement")
        if self.max_model_len is not None and self.max_model_len < 16:
            raise InvalidBuildConfigError(f"must be at least 16 tokens, got {self.max_model_len}",
                                          field="max_model_len")
        if self.max_rolling_batch_size < 1:
            raise InvalidBuildConfigError(f"must be at least 1, got {self.max_rolling_batch_size}",
                                          field="max_rolling_batch_size")
        if not 1 <= self.parity_texts <= 1000 or self.smoke_tokens < 1:
            raise InvalidBuildConfigError("parity_texts must be in [1, 1000] and smoke_tokens at least 1")
        if self.out.exists() and not self.out.is_dir():
            raise InvalidBuildConfigError(f"{self.out} exists and is not a folder", field="out")
