"""`ferry invoke`: one function of the template with an event file, as `sam local invoke`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferry.commands._common import Subparsers, UsageError
from ferry.commands._local import add_layers_dir, add_template, start_stack

if TYPE_CHECKING:
    from ferry.local.stack import LocalStack


def register(subparsers: Subparsers) -> None:
    invoke = subparsers.add_parser("invoke", help="invoke one function with an event file, as `sam local invoke`")
    invoke.add_argument("function", help="the template's logical id (PredictFunction) or its functions/ folder")
    invoke.add_argument("-e", "--event", type=Path, required=True, help="the event JSON file")
    add_layers_dir(invoke)
    add_template(invoke)
    invoke.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """As `sam local invoke`: the function's logs on stderr, its response alone on stdout (or, when it fails, the
    error as Lambda's Invoke API answers it, and exit status 1)."""
    from ferry.local.exceptions import FunctionError
    from ferry.local.functions import invoke_error

    event = _event(args.event)
    stack = start_stack(args)
    try:
        name = function_named(stack, args.function)
        if name is None:
            known = ", ".join(sorted(stack.functions))
            raise UsageError(f"no function {args.function!r} in the template; known: {known}")
        try:
            response = stack.invoke(name, event)
        except FunctionError as exc:
            print(json.dumps(invoke_error(exc), indent=2))
            raise
    finally:
        stack.stop()
    print(json.dumps(response, indent=2, default=str))
    return 0


def _event(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"--event {path}: cannot be read ({exc.strerror})") from None
    except ValueError as exc:
        raise UsageError(f"--event {path}: not valid JSON ({exc})") from None


def function_named(stack: LocalStack, function: str) -> str | None:
    """The logical id of a function given by its logical id or its functions/ folder; None if there is none."""
    by_folder = {f.function.code_uri.name: name for name, f in stack.functions.items()}
    return function if function in stack.functions else by_folder.get(function.strip("/"))
