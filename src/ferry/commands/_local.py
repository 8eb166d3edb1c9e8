"""What `ferry serve`, `ferry invoke` and `ferry batch` share: the project's template and folder of layers, the
local stack started from them, and the stack's errors told with the flag that would fix them."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ferry.commands._common import DEFAULT_LAYERS_DIR, restated

if TYPE_CHECKING:
    from ferry.local.stack import LocalStack


def add_layers_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layers-dir", type=Path, default=DEFAULT_LAYERS_DIR,
                        help="folder of model layers (default %(default)s)")


def add_template(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--template", type=Path, help="the SAM template (default: template.yaml here)")


def project(args: argparse.Namespace) -> tuple[Path, Path, Path | None]:
    """The project's root (the template's folder), its folder of layers and its template (None: the root's)."""
    root = args.template.resolve().parent if args.template is not None else Path.cwd()
    return root, args.layers_dir.resolve(), args.template


@contextmanager
def local_errors() -> Iterator[None]:
    """The local stack's errors about a folder or an address, told with the flag that gives it."""
    from ferry.local.exceptions import LayersNotFoundError, ListenError

    try:
        yield
    except LayersNotFoundError as exc:
        raise restated(exc, f"--layers-dir {exc}") from None
    except ListenError as exc:
        raise restated(exc, f"{exc}; try --port") from None


def start_stack(args: argparse.Namespace) -> LocalStack:
    """The local stack of `ferry invoke` and `ferry batch`, started (the functions' logs go to stderr)."""
    from ferry.local.stack import LocalStack

    root, layers_dir, template = project(args)
    with local_errors():
        return LocalStack(root=root, layers_dir=layers_dir, template_path=template).start()
