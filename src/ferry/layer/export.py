"""ONNX export with Optimum and dynamic int8 quantization with ONNX Runtime (through Optimum's ORTQuantizer)."""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path

from ferry.layer.config import QuantizationSettings
from ferry.layer.exceptions import BuildError
from ferry.runtime.constants import MODEL_FILE, TOKENIZER_FILE

QUANTIZED_OPS = ("MatMulInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLinear", "ConvInteger", "QAttention")


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


def quantize_int8(export_dir: Path, settings: QuantizationSettings, output: Path) -> Path:
    """Dynamic int8 quantization of ``export_dir/model.onnx``; returns the quantized file."""
    from optimum.onnxruntime import ORTQuantizer

    _quiet()
    quantizer = ORTQuantizer.from_pretrained(export_dir, file_name=MODEL_FILE)
    quantizer.quantize(save_dir=output, quantization_config=settings.to_optimum(), file_suffix="int8")
    produced = output / "model_int8.onnx"
    if not produced.is_file():
        raise BuildError(f"quantization wrote no {produced.name} in {output}")
    return produced


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
