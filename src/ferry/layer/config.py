"""The build's settings, validated once, and the int8 quantization chosen for each target architecture."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferry.layer.exceptions import InvalidBuildConfigError
from ferry.runtime.constants import MODEL_NAME_RE, TASKS

ARCHES = ("x86_64", "arm64")

# Environment variables the build side reads (in BuildEnvironment.from_env, and nowhere else)
ENV_HUB_OFFLINE = "HF_HUB_OFFLINE"  # Hugging Face's own: never contact the hub, use only its cache
ENV_POWERTOOLS_LAYER_MB = "FERRY_POWERTOOLS_LAYER_MB"  # the measured size of the Powertools layer, in MB
_TRUE = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True)
class BuildEnvironment:
    """What the build and training take from the environment, read in one place (:meth:`from_env`).

    Everything else reads these fields, so that a library caller can state them instead of setting variables.
    """

    hub_offline: bool = False  # resolve hub ids from the Hugging Face cache only
    powertools_layer_mb: float | None = None  # measured; None: the size check budgets for the managed layer

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BuildEnvironment:
        env = os.environ if environ is None else environ
        raw = env.get(ENV_POWERTOOLS_LAYER_MB, "").strip()
        try:
            powertools = float(raw) if raw else None
        except ValueError:
            powertools = None
        if raw and (powertools is None or not 0 <= powertools < 1e6):
            raise InvalidBuildConfigError(f"{ENV_POWERTOOLS_LAYER_MB}={raw!r} is not a number of MB")
        return cls(hub_offline=env.get(ENV_HUB_OFFLINE, "").strip().lower() in _TRUE, powertools_layer_mb=powertools)


@dataclass(frozen=True)
class QuantizationSettings:
    """Dynamic int8, per-channel, with ONNX Runtime's quantizer. Recorded verbatim in the manifest."""

    activations: str = "uint8"
    weights: str = "int8"
    per_channel: bool = True
    reduce_range: bool = False
    operators: tuple[str, ...] = ("MatMul", "Gather", "Attention", "EmbedLayerNormalization")
    why: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": "dynamic",
            "format": "QOperator",
            "activations": self.activations,
            "weights": self.weights,
            "per_channel": self.per_channel,
            "reduce_range": self.reduce_range,
            "operators": list(self.operators),
            "why": self.why,
        }

    def quantizer_arguments(self) -> dict[str, Any]:
        """The arguments of ONNX Runtime's ``ONNXQuantizer`` for these settings, as Optimum's ``ORTQuantizer``
        gives them for the same ``QuantizationConfig`` (dynamic, QOperator, symmetric weights), plus the one it
        cannot pass: ``DefaultTensorType``, the type of a tensor that ONNX's shape inference cannot type, which is
        every output of the fused transformer ops (:class:`GraphSettings`); they are all float32."""
        import onnx
        from onnxruntime.quantization import QuantizationMode, QuantType

        dtypes = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
        return {
            "per_channel": self.per_channel,
            "reduce_range": self.reduce_range,
            "mode": QuantizationMode.IntegerOps,
            "static": False,
            "weight_qType": dtypes[self.weights],
            "activation_qType": dtypes[self.activations],
            "tensors_range": None,
            "nodes_to_quantize": [],
            "nodes_to_exclude": [],
            "op_types_to_quantize": list(self.operators),
            "extra_options": {
                "WeightSymmetric": True,
                "ActivationSymmetric": False,
                "EnableSubgraph": False,
                "ForceSymmetric": False,
                "AddQDQPairToWeight": False,
                "DedicatedQDQPair": False,
                "QDQOpTypePerChannelSupportToAxis": {},
                "DefaultTensorType": onnx.TensorProto.FLOAT,
            },
        }


# The choice per target, measured by benchmarks/quantization.py (figures in the README).
# x86_64: Lambda does not promise VNNI, and without VNNI the U8S8 kernels (VPMADDUBSW) can saturate;
# 7-bit weights (reduce_range) rule that out at no measurable cost in speed or accuracy.
# arm64: no such saturation on ARM's int8 dot products, so full-range int8 weights.
QUANTIZATION = {
    "x86_64": QuantizationSettings(
        reduce_range=True,
        why="U8S8 with 7-bit weights: cannot saturate on x86 CPUs without VNNI (Lambda does not promise VNNI)",
    ),
    "arm64": QuantizationSettings(reduce_range=False, why="U8S8 full range: ARM int8 dot products do not saturate"),
}


# The fusions of ONNX Runtime's transformer optimizer, by the op each one makes (FusionOptions flags).
FUSIONS = {
    "Attention": ("enable_attention",),
    "Gelu": ("enable_gelu",),
    "LayerNormalization": ("enable_layer_norm",),
    "EmbedLayerNormalization": ("enable_embed_layer_norm",),
    "SkipLayerNormalization": ("enable_skip_layer_norm", "enable_bias_skip_layer_norm"),
    "BiasGelu": ("enable_bias_gelu",),
}


@dataclass(frozen=True)
class GraphSettings:
    """Graph optimizations saved into model.onnx, before quantization. Recorded verbatim in the manifest.

    Only hardware-neutral ones (DESIGN.md): ONNX Runtime's basic optimizations (constant folding, redundant nodes:
    ``opt_level`` 1, run before any execution provider is chosen) and some of its transformer fusions
    (``onnxruntime.transformers.optimizer``), which rewrite a subgraph into one op that the CPU execution provider
    runs on any x86_64 or arm64 CPU, computing the same function (the GELU stays exact: no tanh approximation).
    ``fusions`` names the ops made (:data:`FUSIONS`); none: the export's graph as it is. Layout optimizations
    (``ORT_ENABLE_ALL``) depend on the CPU and stay at session load, on the CPU that runs them.
    """

    fusions: tuple[str, ...] = ("Attention", "Gelu", "LayerNormalization")
    opt_level: int = 1  # ONNX Runtime's basic level before the fusions: hardware-neutral; 2 and 99 are not saved
    attention_mask: str = "raw"  # the Attention op reads the 0/1 mask as given (any padding), not a lengths index
    why: str = ""

    def __post_init__(self) -> None:
        if self.opt_level not in (0, 1):
            raise InvalidBuildConfigError(
                f"must be 0 or 1 (saved graph optimizations are hardware-neutral), got {self.opt_level}",
                field="graph.opt_level")
        unknown = [name for name in self.fusions if name not in FUSIONS]
        if unknown:
            raise InvalidBuildConfigError(f"{unknown} are not among {', '.join(FUSIONS)}", field="graph.fusions")
        if self.attention_mask not in ("raw", "lengths"):
            raise InvalidBuildConfigError(f"must be raw or lengths, got {self.attention_mask!r}",
                                          field="graph.attention_mask")

    @property
    def fuse(self) -> bool:
        return bool(self.fusions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "saved": "transformer fusions" if self.fuse else "none",
            "optimizer": "onnxruntime.transformers.optimizer" if self.fuse else None,
            "fusions": list(self.fusions),
            "opt_level": self.opt_level if self.fuse else None,
            "attention_mask": self.attention_mask if self.fuse else None,
            "gelu_approximation": False,
            "why": self.why,
        }


# The choice for every target, measured by benchmarks/quantization.py (figures in docs/build.md). Only attention
# (QAttention once quantized) and the ops the export spells out in pieces: ONNX Runtime's fused SkipLayerNormalization,
# BiasGelu and EmbedLayerNormalization were each measured slower on CPU than the ops they replace, whose bias adds
# the int8 MatMuls then take into their own kernels.
GRAPH = GraphSettings(
    why="attention fused (QAttention once quantized), exact GELU and layer norms: 0.74x the time at 1 x 32 and at "
    "8 x 128 tokens (2 threads); skip/bias/embedding fusions measured slower, so left out; hardware-neutral, so "
    "saved in the file",
)


@dataclass(frozen=True)
class GateThresholds:
    max_accuracy_drop: float = 0.5  # percentage points, int8 under fp32
    min_agreement: float = 0.98  # fraction of texts with the same top label
    min_cosine: float = 0.95  # the worst fp32-vs-int8 cosine allowed

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_accuracy_drop <= 100.0:
            raise InvalidBuildConfigError(
                f"must be between 0 and 100 percentage points, got {self.max_accuracy_drop}", field="max_accuracy_drop"
            )
        if not 0.0 <= self.min_agreement <= 1.0:
            raise InvalidBuildConfigError(
                f"must be a fraction in [0, 1], got {self.min_agreement}", field="min_agreement"
            )
        if not -1.0 <= self.min_cosine <= 1.0:
            raise InvalidBuildConfigError(f"must be in [-1, 1], got {self.min_cosine}", field="min_cosine")


@dataclass(frozen=True)
class BuildConfig:
    model: str
    task: str
    out: Path
    name: str | None = None
    arch: str = "x86_64"
    eval_data: Path | None = None
    # a held-out split (the trainer's predictions/validation.jsonl): the monitor's reference sample and calibration;
    # without it, the evaluation texts serve (then the reported accuracy and the reference share texts)
    reference_data: Path | None = None
    reference_rows: int = 4000  # a larger split is sampled (seeded): the manifest keeps a few thousand rows
    text_column: str = "text"
    label_column: str = "label"
    max_length: int | None = None
    gate: GateThresholds = field(default_factory=GateThresholds)
    runtime_layer: Path | None = None  # a built runtime layer folder, measured for the size check
    batch_size: int = 32
    quantization_override: QuantizationSettings | None = None  # for measuring candidates; builds use the arch's
    graph_override: GraphSettings | None = None  # for measuring candidates; builds use GRAPH
    environment: BuildEnvironment = field(default_factory=BuildEnvironment.from_env)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise InvalidBuildConfigError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.arch not in ARCHES:
            raise InvalidBuildConfigError(f"unknown arch {self.arch!r}; choose one of {', '.join(ARCHES)}")
        if self.name is not None and not MODEL_NAME_RE.fullmatch(self.name):
            raise InvalidBuildConfigError(
                f"bad name {self.name!r}: lowercase letters, digits and '-', starting with a letter or digit, "
                "at most 63 characters"
            )
        if self.max_length is not None and not 2 <= self.max_length <= 8192:
            raise InvalidBuildConfigError(f"must be between 2 and 8192, got {self.max_length}", field="max_length")
        if self.out.exists() and not self.out.is_dir():
            raise InvalidBuildConfigError(f"{self.out} exists and is not a folder", field="out")
        if self.batch_size < 1:
            raise InvalidBuildConfigError(f"batch size must be positive, got {self.batch_size}")

    @property
    def quantization(self) -> QuantizationSettings:
        return self.quantization_override or QUANTIZATION[self.arch]

    @property
    def graph(self) -> GraphSettings:
        return self.graph_override or GRAPH
