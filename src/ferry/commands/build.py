"""`ferry build`: a Hugging Face model to a verified int8 ONNX Lambda layer (:func:`ferry.layer.build_layer`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ferry.commands._common import DEFAULT_LAYERS_DIR, Subparsers, default_of, given, progress
from ferry.layer.config import ARCHES, BuildConfig, GateThresholds
from ferry.runtime.constants import TASKS, TEXT_CLASSIFICATION

if TYPE_CHECKING:
    from ferry.layer import BuildResult


def register(subparsers: Subparsers) -> None:
    build = subparsers.add_parser(
        "build",
        help="export a Hugging Face model to int8 ONNX, gate it against the original, package it as a layer",
        description="Export a Hugging Face model to ONNX with Optimum, quantize it to int8, check it against "
        "the fp32 original (the parity gate) and write a Lambda layer folder OUT/NAME/.",
    )
    build.add_argument("--model", required=True, help="a local model folder, or a hub id available offline")
    build.add_argument("--task", required=True, choices=TASKS)
    build.add_argument("--name", help="the model's name (default: from --model)")
    build.add_argument("--arch", choices=ARCHES,
                       help=f"Lambda architecture (default {default_of(BuildConfig, 'arch')})")
    build.add_argument("--out", type=Path, default=DEFAULT_LAYERS_DIR, help="folder of layers (default %(default)s)")
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
                       help=f"label agreement (default {default_of(GateThresholds, 'min_agreement')})")
    build.add_argument("--min-cosine", type=float,
                       help=f"worst embedding cosine (default {default_of(GateThresholds, 'min_cosine')})")
    build.add_argument("--runtime-layer", type=Path, help="a built runtime layer folder, for the size check")
    build.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ferry.layer import build_layer

    config = BuildConfig(**given(args, BuildConfig), gate=GateThresholds(**given(args, GateThresholds)))
    print(format_build_summary(build_layer(config, progress=progress(args))))
    return 0


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
