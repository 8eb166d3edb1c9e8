"""ONNX export with Optimum, ONNX Runtime's hardware-neutral transformer fusions, and dynamic int8 quantization with
ONNX Runtime's quantizer."""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ferry.layer.config import FUSIONS, GraphSettings, QuantizationSettings
from ferry.layer.exceptions import BuildError
from ferry.runtime.constants import MODEL_FILE, TOKENIZER_FILE

QUANTIZED_OPS = ("MatMulInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLinear", "ConvInteger", "QAttention",
                 "QEmbedLayerNormalization")


def _quiet() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    for logger in ("optimum", "optimum.onnxruntime", "optimum.exporters", "onnxruntime"):
        logging.getLogger(logger).setLevel(logging.ERROR)


def export_onnx(model_path: Path, task: str, output: Path) -> Path:
    """Export a local Hugging Face model folder to ``output/model.onnx`` (fp32) with its tokenizer files."""
    from optimum.exporters.onnx import main_export

    _quiet()
    try:
        main_export(
            model_name_or_path=str(model_path),
            output=output,
            task=task,
            library_name="transformers",  # else a sentence-transformers folder only offers its own tasks
            local_files_only=True,
            do_validation=False,  # the parity gate compares far more than Optimum's spot check
        )
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        raise BuildError(f"ONNX export of {model_path} failed: {exc.__class__.__name__}: {exc}") from None
    if not (output / MODEL_FILE).is_file():
        raise BuildError(f"ONNX export of {model_path} wrote no {MODEL_FILE}")
    if not (output / TOKENIZER_FILE).is_file():
        raise BuildError(
            f"{model_path} has no fast tokenizer ({TOKENIZER_FILE}); ferry serves only models whose tokenizer "
            "the `tokenizers` library can load"
        )
    return output / MODEL_FILE


# ONNX Runtime's transformer optimizer knows these architectures' graphs as "bert" (as Optimum's ORTOptimizer maps
# them); any other model type is quantized unfused.
FUSABLE_MODEL_TYPES = frozenset({"bert", "distilbert", "roberta", "xlm-roberta", "camembert", "electra", "albert",
                                 "mpnet", "deberta", "deberta-v2"})
FUSED_OPS = ("Attention", "MultiHeadAttention", "EmbedLayerNormalization", "SkipLayerNormalization", "BiasGelu",
             "Gelu", "FastGelu", "LayerNormalization")  # what the manifest counts in the fused graph
_MASK_FORMATS = {"raw": 2, "lengths": 0}  # onnxruntime.transformers.fusion_options.AttentionMaskFormat
# FusionOptions flags of fusions ferry never asks for (rotary embeddings, GPU-only ordered int8 ops, fast GELU)
_OTHER_FUSION_FLAGS = frozenset({"enable_rotary_embeddings", "enable_qordered_matmul", "enable_gemm_fast_gelu",
                                 "use_multi_head_attention"})


def optimize_graph(fp32_file: Path, settings: GraphSettings, output: Path) -> tuple[Path, dict[str, Any]]:
    """The fp32 graph with the hardware-neutral optimizations of `settings` saved into it (:class:`GraphSettings`),
    and what was done: the graph itself when there is nothing to do. The file is written as ``output/model.onnx``
    beside a copy of the export's config.json."""
    config = _json(fp32_file.parent / "config.json")
    model_type = str(config.get("model_type", ""))
    record: dict[str, Any] = {**settings.to_dict(), "model_type": model_type or None, "fused_nodes": {}}
    if not settings.fuse:
        return fp32_file, record
    if model_type not in FUSABLE_MODEL_TYPES:
        record.update(saved="none", why=f"no transformer fusions for model type {model_type or 'unknown'!r}")
        return fp32_file, record
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    wanted = {flag for name in settings.fusions for flag in FUSIONS[name]}
    for flag in {flag for flags in FUSIONS.values() for flag in flags} | _OTHER_FUSION_FLAGS:
        setattr(options, flag, flag in wanted)
    options.enable_gelu_approximation = False  # exact erf GELU only: the fused graph computes the same function
    options.attention_mask_format = _MASK_FORMATS[settings.attention_mask]
    heads = config.get("num_attention_heads", config.get("n_heads", 0))
    hidden = config.get("hidden_size", config.get("dim", 0))
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    try:
        optimized = optimize_model(str(fp32_file), model_type="bert", num_heads=int(heads), hidden_size=int(hidden),
                                   optimization_options=options, opt_level=settings.opt_level, use_gpu=False)
    except (ValueError, KeyError, RuntimeError, AssertionError) as exc:  # the graph is still good unfused
        record.update(saved="none", why=f"the fusions failed ({exc.__class__.__name__}: {exc}); quantized unfused")
        return fp32_file, record
    output.mkdir(parents=True, exist_ok=True)
    target = output / MODEL_FILE
    optimized.save_model_to_file(str(target))
    copy_file(fp32_file.parent / "config.json", output / "config.json")
    ops = Counter(node.op_type for node in optimized.model.graph.node)
    record["fused_nodes"] = {op: ops[op] for op in FUSED_OPS if ops[op]}
    return target, record


def quantize_int8(model_file: Path, settings: QuantizationSettings, output: Path) -> Path:
    """Dynamic int8 quantization of `model_file` (the export, fused or not) with ONNX Runtime's quantizer, the one
    Optimum's ORTQuantizer drives, given the same arguments (:meth:`QuantizationSettings.quantizer_arguments`);
    returns the quantized file, ``output/model_int8.onnx``."""
    import onnx
    from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer

    try:
        with _root_logger_at(logging.ERROR):  # the quantizer warns on the root logger ("consider pre-processing")
            quantizer = ONNXQuantizer(onnx.load(str(model_file)), **settings.quantizer_arguments())
            quantizer.quantize_model()
    except (ValueError, KeyError, RuntimeError) as exc:
        raise BuildError(f"int8 quantization of {model_file.name} failed: {exc.__class__.__name__}: {exc}") from None
    output.mkdir(parents=True, exist_ok=True)
    produced = output / "model_int8.onnx"
    quantizer.model.save_model_to_file(str(produced))
    if not produced.is_file():
        raise BuildError(f"quantization wrote no {produced.name} in {output}")
    return produced


@contextmanager
def _root_logger_at(level: int) -> Iterator[None]:
    root = logging.getLogger()
    before = root.level
    root.setLevel(max(before, level))
    try:
        yield
    finally:
        root.setLevel(before)


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def onnx_facts(model_file: Path) -> dict[str, object]:
    """Opset, graph inputs and outputs, and how many nodes of each quantized op type the graph holds."""
    import onnx

    model = onnx.load(str(model_file), load_external_data=False)
    opset = next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), None)
    ops = Counter(node.op_type for node in model.graph.node)
    return {
        "opset": opset,
        "inputs": [graph_input.name for graph_input in model.graph.input],
        "outputs": [graph_output.name for graph_output in model.graph.output],
        "quantized_nodes": {op: ops[op] for op in QUANTIZED_OPS if ops[op]},
        "int8_initializers": sum(1 for init in model.graph.initializer if init.data_type in (2, 3)),
    }


def write_tokenizer(source: Path, target: Path) -> None:
    """Copy tokenizer.json without its own padding or truncation: the runtime sets both from the manifest.

    (The MiniLM tokenizer.json ships fixed padding to 128, which would make every text 128 tokens long.)
    """
    data = json.loads(source.read_text(encoding="utf-8"))
    data["padding"] = None
    data["truncation"] = None
    target.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def copy_file(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
