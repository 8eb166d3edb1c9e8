"""What every command shares: its output (``ferry: ...`` lines on stderr), the command line's own errors, the
library's arguments taken from the parsed flags, and the library's messages told with those flags."""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias

from ferry.exceptions import EXIT_FAILED, EXIT_USAGE, FerryError

EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports of a command stopped by Ctrl-C
DEFAULT_LAYERS_DIR = Path("layers/model")  # the folder of layers `ferry build` writes and the other commands read

# what each command's ``register`` is given, to ``add_parser`` itself to
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class CommandError(FerryError):
    """A failure the command line reports itself: an input it cannot use, or a library error it restates."""

    code = "command_failed"


class UsageError(CommandError):
    """Arguments the command cannot use: exit status 2, as argparse's own errors."""

    code = "usage_error"
    exit_status = EXIT_USAGE


def restated(error: FerryError, message: str) -> CommandError:
    """`error` told again with what only the command line knows (the flag that gave a value, a hint), with the same
    exit status."""
    return (UsageError if error.exit_status == EXIT_USAGE else CommandError)(message)


# -- output ---------------------------------------------------------------------------------------------------------

def fail(message: str, status: int = EXIT_FAILED) -> int:
    sys.stderr.write(f"ferry: error: {message}\n")
    return status


def warn(message: str) -> None:
    sys.stderr.write(f"ferry: warning: {message}\n")


def progress(args: argparse.Namespace) -> Callable[[str], None]:
    """The library's progress callback: each step as a ``ferry: ...`` line on stderr, in the command's flags."""
    def report(message: str) -> None:
        sys.stderr.write(f"ferry: {in_flags(message, args)}...\n")
        sys.stderr.flush()

    return report


# -- the library's arguments and messages, in the command line's terms ----------------------------------------------

def flag(dest: str) -> str:
    """The flag of an option, from its name in the parsed arguments (argparse's rule, reversed)."""
    return "--" + dest.replace("_", "-")


def in_flags(text: str, args: argparse.Namespace) -> str:
    """`text` with every argument of the library that it names with a value (``min_agreement 0.98``) named by the
    flag that gives it (``--min-agreement 0.98``): the library speaks of its arguments, a command of its flags."""
    names = sorted((name for name in vars(args) if "_" in name), key=len, reverse=True)
    if not names:
        return text
    pattern = re.compile(rf"\b({'|'.join(map(re.escape, names))})(?= -?\d)")
    return pattern.sub(lambda match: flag(match.group(1)), text)


def message_of(error: FerryError, args: argparse.Namespace) -> str:
    """What `error` says, in the terms of the command that ran: an error about one argument of the library
    (``field``) names the flag that gave it, e.g. ``--eval-data x.csv: no such file``."""
    field = getattr(error, "field", None)
    if field is not None and field in vars(args):
        return in_flags(f"{flag(field)} {error.detail}", args)
    return in_flags(str(error), args)


def given(args: argparse.Namespace, config: type[Any]) -> dict[str, Any]:
    """The arguments of the library's `config` (a dataclass) that were given as flags. An option left out is None
    and is not passed, so that the library's default applies."""
    names = {field.name for field in dataclasses.fields(config)}
    return {name: value for name, value in vars(args).items() if name in names and value is not None}


def default_of(config: type[Any], name: str) -> Any:
    """The library's default for its argument `name` (a field of the dataclass `config`), for help texts."""
    return next(field.default for field in dataclasses.fields(config) if field.name == name)


def models_path(layers_dir: Path | None) -> list[Path]:
    """Where `ferry predict` and `ferry models` look for models: the layers of `layers_dir` when given, else the
    folders of FERRY_MODELS_DIR when it is set, else the layers of the default folder."""
    from ferry.runtime.layout import layer_models_dirs
    from ferry.runtime.settings import configured_models_path

    configured = None if layers_dir is not None else configured_models_path()
    if configured is not None:
        return list(configured)
    return layer_models_dirs(layers_dir or DEFAULT_LAYERS_DIR)
