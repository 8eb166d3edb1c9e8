"""`ferry models`: the built models, with the version, task and int8 accuracy their manifests record."""

from __future__ import annotations

import argparse
from pathlib import Path

from ferry.commands._common import DEFAULT_LAYERS_DIR, CommandError, Subparsers, models_path


def register(subparsers: Subparsers) -> None:
    models = subparsers.add_parser("models", help="list the built models; `ferry models history NAME`: its versions")
    models.add_argument("--layers-dir", type=Path, default=None,
                        help=f"folder of layers (default {DEFAULT_LAYERS_DIR}, or FERRY_MODELS_DIR when it is set)")
    models.set_defaults(run=run)
    actions = models.add_subparsers(dest="action", required=False, metavar="ACTION")
    history = actions.add_parser("history", help="every registered version of a model of the running `ferry "
                                 "serve`: status, who changed it and why, the gate's verdict")
    history.add_argument("model")
    history.add_argument("--json", action="store_true", help="the registry's entries as JSON")
    history.add_argument("--template", type=Path, help="the SAM template (default: template.yaml here)")
    history.set_defaults(run=run_history)


def run_history(args: argparse.Namespace) -> int:
    import json

    from ferry.local import running
    from ferry.runtime.registry import Registry
    from ferry.update.local import tables_of

    root = args.template.resolve().parent if args.template is not None else Path.cwd()
    registry = Registry(tables_of(running.find(root)).registry)
    entries = registry.versions(args.model)
    if args.json:
        print(json.dumps({"versions": [entry.to_dict() for entry in entries],
                          "events": [event.to_dict() for event in registry.events(args.model)]}, indent=1))
        return 0
    if not entries:
        raise CommandError(f"{args.model}: no registered version (the registry learns the live one at the first "
                           "update: ferry update)")
    for entry in entries:
        print(f"{entry.version}  {entry.status:11} created {entry.created_at} by {entry.by}")
        for change in entry.history:
            force = " (forced: the gate was skipped)" if change.get("force") else ""
            print(f"    {change.get('at', '')}  {change.get('from') or '-'} -> {change.get('to')}  by "
                  f"{change.get('by')}: {change.get('why', '')}{force}")
        if entry.gate and entry.gate.get("summary"):
            print("    gate: " + str(entry.gate["summary"]).replace("\n", "\n          "))
    return 0


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
