"""`ferry predict`: a built model on texts, through the prediction service (:mod:`ferry.runtime.service`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferry.commands._common import DEFAULT_LAYERS_DIR, Subparsers, UsageError, models_path

if TYPE_CHECKING:
    from ferry.runtime.service import Answer

VECTOR_DECIMALS = 6  # an embedding's components in --json output


def register(subparsers: Subparsers) -> None:
    predict = subparsers.add_parser("predict", help="run a built model on texts (classify or embed)")
    predict.add_argument("model", help="model name (a folder of --layers-dir) or the path of a model/layer folder")
    predict.add_argument("texts", nargs="+", help="texts; '-' reads one text per line from stdin")
    predict.add_argument("--layers-dir", type=Path, default=None,
                         help=f"folder of layers (default {DEFAULT_LAYERS_DIR}, or FERRY_MODELS_DIR when it is set)")
    predict.add_argument("--top-k", type=int)
    predict.add_argument("--json", action="store_true", help="print the full answer as JSON")
    predict.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ferry.runtime.manifest import as_model_dir
    from ferry.runtime.service import Options, PredictionService

    texts = args.texts
    if texts == ["-"]:
        texts = [line for line in sys.stdin.read().splitlines() if line.strip()]
    if not texts:
        raise UsageError("no texts: pass them as arguments or one per line on stdin")
    folder = Path(args.model)
    if folder.is_dir():  # a model folder, or a layer folder with one model
        model_dir = as_model_dir(folder)
        service, name = PredictionService.for_models([model_dir.parent]), model_dir.name
    else:
        service, name = PredictionService.for_models(models_path(args.layers_dir)), args.model
    answer = service.predict(name, texts, Options(top_k=args.top_k))
    if args.json:
        print(json.dumps({"model": answer.model, "version": answer.version, "predictions": _items(answer)}))
        return 0
    for text, item in zip(texts, _items(answer), strict=True):
        print(f"{answer.model} {answer.version}  {text[:60]!r}  ->  {_shown(answer.task, item)}")
    return 0


def _items(answer: Answer) -> list[Any]:
    """One item per text: a classifier's labels with scores, or an embedder's vector (rounded)."""
    from ferry.runtime.constants import FEATURE_EXTRACTION

    if answer.task == FEATURE_EXTRACTION:
        return [[round(value, VECTOR_DECIMALS) for value in vector] for vector in answer.payload]
    return list(answer.payload)


def _shown(task: str, item: Any) -> str:
    from ferry.runtime.constants import FEATURE_EXTRACTION

    if task == FEATURE_EXTRACTION:
        return f"{len(item)}-d vector [{', '.join(f'{value:.4f}' for value in item[:4])}, ...]"
    return ", ".join(f"{entry['label']} {entry['score']:.3f}" for entry in item)
