"""`ferry models`: the built models, with the version, task and int8 accuracy their manifests record."""

from __future__ import annotations

import argparse
from pathlib import Path

from ferry.commands._common import DEFAULT_LAYERS_DIR, CommandError, Subparsers, models_path


def register(subparsers: Subparsers) -> None:
    models = subparsers.add_parser("models", help="list the built models")
    models.add_argument("--layers-dir", type=Path, default=None,
                        help=f"folder of layers (default {DEFAULT_LAYERS_DIR}, or FERRY_MODELS_DIR when it is set)")
    models.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ferry.runtime import FerryRuntimeError, Manifest, discover_models

    found = discover_models(models_path(args.layers_dir))
    if not found:
        raise CommandError("no built models; run `ferry build` (or `make up`)")
    for name, path in sorted(found.items()):
        try:
            manifest = Manifest.load(path)
        except FerryRuntimeError as exc:
            print(f"{name:20} unreadable: {exc}")
            continue
        parity = manifest.parity
        accuracy = (f"  int8 accuracy {parity.accuracy_int8:.4f} on {parity.texts} texts"
                    if parity is not None and parity.accuracy_int8 is not None and parity.texts else "")
        print(f"{name:20} {manifest.version}  {manifest.task:20} {path}{accuracy}")
    return 0
