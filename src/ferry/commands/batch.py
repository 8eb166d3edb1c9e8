"""`ferry batch`: a JSONL/CSV file through the template's S3 batch function, on the local stack."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ferry.commands._common import CommandError, Subparsers, UsageError
from ferry.commands._local import add_layers_dir, add_template, start_stack

BUCKET = "BatchBucket"  # the template's logical id of the bucket that triggers the batch function


def register(subparsers: Subparsers) -> None:
    batch = subparsers.add_parser("batch", help="run a JSONL/CSV file through the S3 batch function, locally")
    batch.add_argument("file", type=Path, help="JSONL ({\"text\": ...} a line) or CSV with a text column")
    batch.add_argument("--model", required=True, help="the model to run")
    batch.add_argument("--out", type=Path, help="where to write the predictions (default FILE.predictions.jsonl); "
                       "refused records, with their line and why, go beside it to FILE.errors.jsonl")
    add_layers_dir(batch)
    add_template(batch)
    batch.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ferry.runtime.batch import ERRORS_SUFFIX, PREDICTIONS_SUFFIX, READERS

    if not args.file.is_file():
        raise UsageError(f"{args.file}: no such file")
    if args.file.suffix not in READERS:
        raise UsageError(f"{args.file}: unknown format {args.file.suffix!r}; use {' or '.join(READERS)}")
    out = args.out or args.file.with_name(args.file.stem + PREDICTIONS_SUFFIX)
    # beside the predictions: x.predictions.jsonl -> x.errors.jsonl, y.jsonl -> y.errors.jsonl
    errors = out.with_name(out.stem.removesuffix(Path(PREDICTIONS_SUFFIX).stem) + ERRORS_SUFFIX)
    stack = start_stack(args)
    try:
        outcome = _run_file(stack, args.model, args.file)
        s3, bucket = stack.client("s3"), stack.table_names[BUCKET]
        temporary = out.with_name(f".{out.name}.tmp")
        s3.download_file(bucket, outcome["output"], str(temporary))
        temporary.replace(out)
        if outcome["errors"]:
            s3.download_file(bucket, outcome["errors_output"], str(errors))
        else:
            errors.unlink(missing_ok=True)  # an earlier run's, which would be taken for this one's
    finally:
        stack.stop()
    print(f"{outcome['records']} records: {outcome['predicted']} predictions -> {out}" +
          (f"; {outcome['errors']} refused -> {errors}" if outcome["errors"] else ""))
    return 0


def _run_file(stack: Any, model: str, file: Path) -> dict[str, Any]:
    """The batch function's summary of `file`, dropped where the template's bucket triggers it for `model`."""
    from botocore.exceptions import BotoCoreError, ClientError

    from ferry.local.exceptions import FunctionError
    from ferry.runtime import FerryRuntimeError
    from ferry.runtime.batch import input_key

    try:
        answer = stack.drop_file(BUCKET, input_key(model, file.name), file)
    except (FunctionError, FerryRuntimeError, BotoCoreError, ClientError) as exc:  # the function raised
        raise CommandError(f"{file}: the batch was not finished: {exc}") from None
    outcome: dict[str, Any] = (answer.get("results") or [{"error": answer.get("rejected", "no result")}])[0]
    if "error" in outcome:
        raise CommandError(outcome["error"])
    return outcome
