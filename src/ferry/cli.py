"""`ferry`: a thin command line over the library. Each command parses, delegates and reports.

Exit codes: 0 success, 1 the work failed (a gate, a size limit, a model that does not load), 2 bad arguments.
The commands are in :mod:`ferry.commands`, one module each; this module builds the parser from them, runs the one
asked for, and says any error of Ferry's in one line with the exit status the error carries.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ferry.commands import (
    batch,
    bench,
    build,
    captures,
    endpoint,
    feedback,
    invoke,
    keys,
    models,
    monitor,
    predict,
    serve,
    train,
    update,
)
from ferry.commands._common import EXIT_INTERRUPTED, fail, message_of
from ferry.exceptions import FerryError

# in the order --help lists them
COMMANDS = (build, train, predict, models, serve, endpoint, invoke, batch, feedback, monitor, update, keys, captures,
            bench)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ferry", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except FerryError as exc:
        return fail(message_of(exc, args), exc.exit_status)
    except KeyboardInterrupt:
        return fail("interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:  # `ferry predict ... | head`: the reader left, which is not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
