"""`ferry build`: a Hugging Face model to a verified int8 ONNX Lambda layer (:func:`ferry.layer.build_layer`), or,
with ``--task text-generation``, a causal LM to the checked model.tar.gz of a SageMaker GPU endpoint
(:func:`ferry.generation.build_endpoint_model`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ferry.commands._common import DEFAULT_LAYERS_DIR, Subparsers, UsageError, default_of, flag, given, progress
from ferry.generation.config import CONTAINERS, DEFAULT_ENDPOINTS_DIR, DTYPES, TEXT_GENERATION, GenerationBuildConfig
from ferry.layer.config import ARCHES, BuildConfig, GateThresholds
from ferry.runtime.constants import TASKS, TEXT_CLASSIFICATION

if TYPE_CHECKING:
    from ferry.generation import GenerationBuildResult
    from ferry.layer import BuildResult

# The options of one kind of build only: given to the other, they are refused rather than ignored.
LAYER_ONLY = ("arch", "eval_data", "reference_data", "text_column", "label_column", "max_length", "max_accuracy_drop",
              "min_cosine", "runtime_layer")
GENERATION_ONLY = ("dtype", "container", "max_model_len")


def register(subparsers: Subparsers) -> None:
    build = subparsers.add_parser(
        "build",
        help="export a Hugging Face model to int8 ONNX, gate it against the original, package it as a layer",
        description="Export a Hugging Face model to ONNX with Optimum, quantize it to int8, check it against "
        "the fp32 original (the parity gate) and write a Lambda layer folder OUT/NAME/. With --task text-generation: "
        "package a causal LM for a SageMaker GPU endpoint (AWS's LMI container), check it with a smoke generation "
        "and a next-token parity check, and write OUT/NAME/{model/,model.tar.gz,manifest.json}.",
    )
    build.add_argument("--model", required=True,
                       help="a local model folder, or a hub id available offline (text-generation: also a .gguf file)")
    build.add_argument("--task", required=True, choices=(*TASKS, TEXT_GENERATION))
    build.add_argument("--name", help="the model's name (default: from --model)")
    build.add_argument("--arch", choices=ARCHES,
                       help=f"Lambda architecture (default {default_of(BuildConfig, 'arch')})")
    # the default is the layers folder itself (the same object, so that text-generation can tell it was not given)
    build.add_argument("--out", type=Path, default=DEFAULT_LAYERS_DIR,
                       help=f"the output folder (default {DEFAULT_LAYERS_DIR}; text-generation: "
                       f"{DEFAULT_ENDPOINTS_DIR})")
    build.add_argument("--eval-data", type=Path, help="CSV/JSONL/TXT of texts (and labels) for the parity gate")
    build.add_argument("--reference-data", type=Path,
                       help="a held-out labelled split (train's predictions/validation.jsonl): the monitor's reference "
                       "and its confidence calibration (default: the --eval-data texts)")
    build.add_argument("--text-column", help=f"(default {default_of(BuildConfig, 'text_column')})")
    build.add_argument("--label-column", help=f"(default {default_of(BuildConfig, 'label_column')})")
    build.add_argument("--max-length", type=int, help="tokens per text (default: the model's own pipeline)")
    build.add_argument("--max-accuracy-drop", type=float,
                       help=f"percentage points (default {default_of(GateThresholds, 'max_accuracy_drop')})")
    build.add_argument("--min-agreement", type=float,
                       help=f"label agreement (default {default_of(GateThresholds, 'min_agreement')}); "
                       "text-generation: "
                       f"next-token agreement (default {default_of(GenerationBuildConfig, 'min_agreement')})")
    build.add_argument("--min-cosine", type=float,
                       help=f"worst embedding cosine (default {default_of(GateThresholds, 'min_cosine')})")
    build.add_argument("--runtime-layer", type=Path, help="a built runtime layer folder, for the size check")
    generation = build.add_argument_group("text-generation (a SageMaker endpoint artifact)")
    generation.add_argument("--dtype", choices=DTYPES,
                            help=f"the weights' dtype (default {default_of(GenerationBuildConfig, 'dtype')})")
    generation.add_argument("--container", choices=CONTAINERS,
                            help=f"the serving container (default {default_of(GenerationBuildConfig, 'container')})")
    generation.add_argument("--max-model-len", type=int,
                            help="tokens (prompt and answer) the endpoint serves (default: the model's context)")
    build.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.task == TEXT_GENERATION:
        return run_generation(args)
    _refuse(args, GENERATION_ONLY, f"to text-generation, not to {args.task}")
    _refuse_causal_lm(args)
    from ferry.layer import build_layer

    config = BuildConfig(**given(args, BuildConfig), gate=GateThresholds(**given(args, GateThresholds)))
    print(format_build_summary(build_layer(config, progress=progress(args))))
    return 0


def run_generation(args: argparse.Namespace) -> int:
    _refuse(args, LAYER_ONLY, "to the Lambda layer builds (text-classification, feature-extraction), not to "
            "text-generation")
    if args.out is DEFAULT_LAYERS_DIR:  # not given: the endpoints folder, never the layers one
        args.out = DEFAULT_ENDPOINTS_DIR
    elif args.out.resolve() == DEFAULT_LAYERS_DIR.resolve():
        raise UsageError(f"--out {args.out}: that is the folder of Lambda layers, where a text-generation artifact "
                         f"would be taken for a layer; use another (default {DEFAULT_ENDPOINTS_DIR})")
    from ferry.generation import build_endpoint_model

    config = GenerationBuildConfig(**given(args, GenerationBuildConfig))
    print(format_generation_summary(build_endpoint_model(config, progress=progress(args))))
    return 0


def _refuse(args: argparse.Namespace, names: tuple[str, ...], applies: str) -> None:
    """A usage error naming the given options that the task in hand does not take."""
    given_flags = [flag(name) for name in names if getattr(args, name, None) is not None]
    if given_flags:
        verb = "applies" if len(given_flags) == 1 else "apply"
        raise UsageError(f"{', '.join(given_flags)} {verb} {applies}")


def _refuse_causal_lm(args: argparse.Namespace) -> None:
    """A causal LM (a .gguf file, or a folder whose config names only *ForCausalLM architectures) given to a layer
    build: the task is wrong, not the model."""
    path = Path(args.model).expanduser()
    architectures: list[str] = []
    if path.is_dir():
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config = None  # the layer build says what is wrong with the folder
        found = config.get("architectures") if isinstance(config, dict) else None
        architectures = [str(arch) for arch in found] if isinstance(found, list) else []
    gguf = path.is_file() and path.suffix.lower() == ".gguf"
    causal = gguf or (bool(architectures) and all(arch.endswith("ForCausalLM") for arch in architectures))
    if causal:
        what = ", ".join(architectures) or "a GGUF file"
        raise UsageError(f"--model {args.model}: a causal language model ({what}), not a {args.task} model; build it "
                         f"with --task {TEXT_GENERATION} (a SageMaker endpoint artifact)")


def format_generation_summary(result: GenerationBuildResult) -> str:
    """What was built and checked: where, how big, the smoke answer and the parity figure."""
    from ferry.layer.packaging import MB

    manifest, smoke, parity = result.manifest, result.smoke, result.parity
    container = manifest.container
    rows = [
        f"built {result.name} {result.version} (text-generation, {manifest.dtype}) -> {result.artifact_dir}",
        f"  {'model':11}{manifest.architecture}, {manifest.parameters / 1e6:.1f}M parameters, context "
        f"{manifest.context_length} tokens (serves {manifest.max_model_len}), chat template: "
        f"{'yes' if manifest.chat_template else 'no (chat requests are refused)'}",
        f"  {'size':11}model/ {result.model_bytes / MB:.1f} MB, "
        f"{result.archive.name} {result.archive_bytes / MB:.1f} MB",
        f"  {'container':11}{container.get('name')} {container.get('image_repository')}:{container.get('image_tag')}"
        f" (serving.properties in model/)",
        f"  {'smoke':11}{smoke.mode} {smoke.prompt!r} -> {smoke.text.strip()!r} ({smoke.generated_tokens} tokens, "
        f"{smoke.seconds:.2f} s; load {smoke.load_seconds:.2f} s)",
        f"  {'parity':11}next-token agreement {parity.agreement:.4f} on {parity.texts} texts ({parity.tokens} tokens), "
        f"{manifest.dtype} vs fp32: PASS",
        f"  {'steps':11}" + ", ".join(f"{step} {secs:.1f} s" for step, secs in result.seconds.items()),
    ]
    return "\n".join(rows)


def format_build_summary(result: BuildResult) -> str:
    """What was built and measured: sizes, the parity figures, the fresh-process load, Lambda's size budget."""
    from ferry.layer.packaging import LAMBDA_UNZIPPED_LIMIT, MB

    manifest, parity, load = result.manifest, result.manifest.parity, result.manifest.load_timings
    assert parity is not None and load is not None, "a build records its parity and load figures"
    if parity.task == TEXT_CLASSIFICATION:
        figures = f"label agreement {parity.agreement:.4f}, max |logit diff| {parity.max_abs_logit_diff:.4f}"
        drop = parity.accuracy_drop_points
        if parity.accuracy_fp32 is not None and drop is not None:  # the evaluation texts were labelled
            figures += (f", accuracy fp32 {parity.accuracy_fp32:.4f} -> int8 {parity.accuracy_int8:.4f} "
                        f"({-drop:+.2f} points)")
    else:
        figures = f"cosine to fp32 min {parity.min_cosine:.4f}, mean {parity.mean_cosine:.4f}"
    budget = "\n".join(f"  {'':11}{part.bytes / MB:7.1f} MB  {part.what}" for part in result.size_parts)
    rows = [
        f"built {result.name} {result.version} ({manifest.task}, {manifest.arch}) -> {result.layer_dir}",
        f"  {'size':11}fp32 {result.fp32_bytes / MB:.1f} MB -> int8 {result.int8_bytes / MB:.1f} MB "
        f"({result.int8_bytes / result.fp32_bytes:.1%})",
        f"  {'parity':11}{figures} on {parity.texts} texts: PASS",
        f"  {'load':11}fresh process: import {load.import_s:.2f} s + load {load.load_s:.2f} s = "
        f"{load.import_and_load_s:.2f} s; first prediction {_ms(load.first_prediction_s)}",
        f"  {'lambda':11}{result.function_bytes / MB:.1f} MB of {LAMBDA_UNZIPPED_LIMIT / MB:.1f} MB unzipped:",
        budget,
        f"  {'steps':11}" + ", ".join(f"{step} {secs:.1f} s" for step, secs in result.seconds.items()),
    ]
    return "\n".join(rows)


def _ms(seconds: float | None) -> str:
    return "not measured" if seconds is None else f"{seconds * 1000:.0f} ms"
