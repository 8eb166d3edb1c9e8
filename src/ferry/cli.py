"""`ferry`: a thin command line over the library. Each command parses, delegates and reports.

Exit codes: 0 success, 1 the work failed (a gate, a size limit, a model that does not load), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_FAILED = 1
EXIT_USAGE = 2
DEFAULT_LAYERS_DIR = Path("layers/model")


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    sys.stderr.write(f"ferry: error: {message}\n")
    return code


def _progress(message: str) -> None:
    sys.stderr.write(f"ferry: {message}...\n")
    sys.stderr.flush()


# --- ferry build ---------------------------------------------------------------------------------------------


def _add_build(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ferry.runtime.constants import TASKS

    build = commands.add_parser(
        "build",
        help="export a Hugging Face model to int8 ONNX, gate it against the original, package it as a layer",
        description="Export a Hugging Face model to ONNX with Optimum, quantize it to int8, check it against "
        "the fp32 original (the parity gate) and write a Lambda layer folder OUT/NAME/.",
    )
    build.add_argument("--model", required=True, help="a local model folder, or a hub id available offline")
    build.add_argument("--task", required=True, choices=TASKS)
    build.add_argument("--name", help="the model's name (default: from --model)")
    build.add_argument("--arch", default="x86_64", choices=("x86_64", "arm64"), help="Lambda architecture")
    build.add_argument("--out", type=Path, default=DEFAULT_LAYERS_DIR, help="folder of layers (default %(default)s)")
    build.add_argument("--eval-data", type=Path, help="CSV/JSONL/TXT of texts (and labels) for the parity gate")
    build.add_argument("--text-column", default="text")
    build.add_argument("--label-column", default="label")
    build.add_argument("--max-length", type=int, help="tokens per text (default: the model's own pipeline)")
    build.add_argument("--max-accuracy-drop", type=float, default=0.5, help="percentage points (default 0.5)")
    build.add_argument("--min-agreement", type=float, default=0.98, help="label agreement (default 0.98)")
    build.add_argument("--min-cosine", type=float, default=0.95, help="worst embedding cosine (default 0.95)")
    build.add_argument("--runtime-layer", type=Path, help="a built runtime layer folder, for the size check")
    build.set_defaults(run=_run_build)


def _run_build(args: argparse.Namespace) -> int:
    from ferry.build import BuildConfig, BuildError, GateThresholds, InvalidBuildConfigError, build_layer

    try:
        config = BuildConfig(
            model=args.model,
            task=args.task,
            out=args.out,
            name=args.name,
            arch=args.arch,
            eval_data=args.eval_data,
            text_column=args.text_column,
            label_column=args.label_column,
            max_length=args.max_length,
            gate=GateThresholds(args.max_accuracy_drop, args.min_agreement, args.min_cosine),
            runtime_layer=args.runtime_layer,
        )
        result = build_layer(config, progress=_progress)
    except InvalidBuildConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except BuildError as exc:
        return _fail(str(exc))
    print(format_build_summary(result))
    return 0


def format_build_summary(result: Any) -> str:
    mb = 1e6
    parity = result.parity.to_dict()
    if result.parity.task == "text-classification":
        figures = f"label agreement {parity['agreement']:.4f}, max |logit diff| {parity['max_abs_logit_diff']:.4f}"
        if parity["accuracy_fp32"] is not None:
            figures += (f", accuracy fp32 {parity['accuracy_fp32']:.4f} -> int8 {parity['accuracy_int8']:.4f} "
                        f"({-parity['accuracy_drop_points']:+.2f} points)")
    else:
        figures = f"cosine to fp32 min {parity['min_cosine']:.4f}, mean {parity['mean_cosine']:.4f}"
    load = result.load
    budget = "\n".join(f"  {'':11}{part.bytes / mb:7.1f} MB  {part.what}" for part in result.size_parts)
    rows = [
        f"built {result.name} {result.version} ({result.manifest['task']}, {result.manifest['arch']}) "
        f"-> {result.layer_dir}",
        f"  {'size':11}fp32 {result.fp32_bytes / mb:.1f} MB -> int8 {result.int8_bytes / mb:.1f} MB "
        f"({result.int8_bytes / result.fp32_bytes:.1%})",
        f"  {'parity':11}{figures} on {parity['texts']} texts: PASS",
        f"  {'load':11}fresh process: import {load['import_s']:.2f} s + load {load['load_s']:.2f} s = "
        f"{load['import_and_load_s']:.2f} s; first prediction {load['first_prediction_s'] * 1000:.0f} ms",
        f"  {'lambda':11}{result.function_bytes / mb:.1f} MB of 262.1 MB unzipped:",
        budget,
        f"  {'steps':11}" + ", ".join(f"{step} {secs:.1f} s" for step, secs in result.seconds.items()),
    ]
    return "\n".join(rows)


# --- ferry predict / ferry models ----------------------------------------------------------------------------


def _add_predict(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    predict = commands.add_parser("predict", help="run a built model on texts (classify or embed)")
    predict.add_argument("model", help="model name (a folder of --layers-dir) or the path of a model/layer folder")
    predict.add_argument("texts", nargs="+", help="texts; '-' reads one text per line from stdin")
    predict.add_argument("--layers-dir", type=Path, default=None, help="folder of layers (default layers/model)")
    predict.add_argument("--top-k", type=int)
    predict.add_argument("--json", action="store_true", help="print the full answer as JSON")
    predict.set_defaults(run=_run_predict)


def _add_models(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = commands.add_parser("models", help="list the built models")
    models.add_argument("--layers-dir", type=Path, default=None)
    models.set_defaults(run=_run_models)


def _search_path(layers_dir: Path | None) -> list[Path]:
    from ferry.runtime import layer_models_dirs, models_search_path

    if layers_dir is None and os.environ.get("FERRY_MODELS_DIR"):
        return models_search_path()
    return layer_models_dirs(layers_dir or DEFAULT_LAYERS_DIR)


def _run_predict(args: argparse.Namespace) -> int:
    from ferry.runtime import FerryRuntimeError, Predictor, resolve_model_dir

    texts = args.texts
    if texts == ["-"]:
        texts = [line for line in sys.stdin.read().splitlines() if line.strip()]
    if not texts:
        return _fail("no texts: pass them as arguments or one per line on stdin", EXIT_USAGE)
    try:
        candidate = Path(args.model)
        model_dir = candidate if candidate.is_dir() else resolve_model_dir(args.model, _search_path(args.layers_dir))
        predictor = Predictor.load(model_dir)
        if predictor.task == "text-classification":
            answer: Any = predictor.classify(texts, top_k=args.top_k)
        else:
            answer = predictor.embed(texts).astype(float).round(6).tolist()
    except FerryRuntimeError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps({"model": predictor.name, "version": predictor.version, "predictions": answer}))
        return 0
    for text, item in zip(texts, answer, strict=True):
        if predictor.task == "text-classification":
            shown = ", ".join(f"{entry['label']} {entry['score']:.3f}" for entry in item)
        else:
            shown = f"{len(item)}-d vector [{', '.join(f'{v:.4f}' for v in item[:4])}, ...]"
        print(f"{predictor.name} {predictor.version}  {text[:60]!r}  ->  {shown}")
    return 0


def _run_models(args: argparse.Namespace) -> int:
    from ferry.runtime import FerryRuntimeError, Manifest, discover_models

    found = discover_models(_search_path(args.layers_dir))
    if not found:
        return _fail("no built models; run `ferry build` (or `make up`)")
    for name, path in sorted(found.items()):
        try:
            manifest = Manifest.load(path)
        except FerryRuntimeError as exc:
            print(f"{name:20} unreadable: {exc}")
            continue
        print(f"{name:20} {manifest.version}  {manifest.task:20} {path}")
    return 0


# --- entry point ---------------------------------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ferry", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_build(commands)
    _add_predict(commands)
    _add_models(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:  # `ferry predict ... | head`: the reader left, which is not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
