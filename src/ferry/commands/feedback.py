"""`ferry feedback FILE`: labels for predictions, from a CSV or JSONL file, sent to POST /v1/feedback.

The file is read as the bulk path reads a ``labels/`` file (:func:`ferry.runtime.feedback.read_label_file`: every
row accepted or refused, with its line number); rows are sent 64 at a time to the API of a running `ferry serve`
(default) or of a deployed stack (``--url``), and each answer is told against its line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from ferry.commands._common import CommandError, Subparsers, UsageError
from ferry.commands._local import add_template
from ferry.exceptions import EXIT_FAILED

BATCH = 64  # MAX_FEEDBACK_ITEMS: one request's labels
SHOWN_ERRORS = 20


def register(subparsers: Subparsers) -> None:
    feedback = subparsers.add_parser(
        "feedback", help="send labels for predictions (CSV or JSONL of prediction_id,label) to POST /v1/feedback",
        description="Read FILE (CSV with a header prediction_id,label[,sampled][,correct], or JSONL of label "
        "objects) and send its rows to the API's /v1/feedback, 64 a request: a running `ferry serve` of this "
        "project, or --url. Rows that cannot be read or that the API refuses are told with their line numbers; exit "
        "status 1 when any was.")
    feedback.add_argument("file", type=Path, metavar="FILE")
    feedback.add_argument("--url", help="the API's base URL (default: the running `ferry serve`)")
    feedback.add_argument("--api-key", default=os.environ.get("FERRY_API_KEY"),
                          help="Bearer key with the feedback scope (default: $FERRY_API_KEY)")
    feedback.add_argument("--sampled", action="store_true",
                          help="mark every label as drawn from a random audit sample (unbiased)")
    add_template(feedback)
    feedback.set_defaults(run=run)


def _url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    from ferry.local import running

    root = args.template.resolve().parent if args.template is not None else Path.cwd()
    return running.find(root).url


def run(args: argparse.Namespace) -> int:
    from ferry.runtime.exceptions import FerryRuntimeError
    from ferry.runtime.feedback import read_label_file

    try:
        body = args.file.read_bytes()
    except OSError as exc:
        raise UsageError(f"{args.file}: cannot be read ({exc.strerror or exc.__class__.__name__})") from None
    url = _url(args)
    refused: list[tuple[int, str]] = []
    outcomes: Counter[str] = Counter()
    pending: list[tuple[int, dict[str, Any]]] = []
    try:
        for line, row in read_label_file(body, args.file.name):
            if isinstance(row, FerryRuntimeError):
                refused.append((line, f"{row.code}: {row}"))
                continue
            item = row.model_dump(exclude_none=True)
            if args.sampled:
                item["sampled"] = True
            pending.append((line, item))
            if len(pending) == BATCH:
                _send(url, args.api_key, pending, outcomes, refused)
                pending = []
    except FerryRuntimeError as exc:  # the whole file: a format or a header it cannot read
        raise CommandError(f"{args.file}: {str(exc).removeprefix(f's3 key {args.file.name!r}: ')}") from None
    if pending:
        _send(url, args.api_key, pending, outcomes, refused)
    rows = sum(outcomes.values()) + len(refused)
    print(f"{args.file}: {rows} rows, {sum(outcomes.values())} accepted ({outcomes['accepted']} new, "
          f"{outcomes['duplicate']} already there, {outcomes['corrected']} corrected), {len(refused)} refused")
    for line, why in sorted(refused)[:SHOWN_ERRORS]:
        sys.stderr.write(f"ferry: line {line}: {why}\n")
    if len(refused) > SHOWN_ERRORS:
        sys.stderr.write(f"ferry: ... and {len(refused) - SHOWN_ERRORS} more refused rows\n")
    return EXIT_FAILED if refused else 0


def _send(url: str, api_key: str | None, rows: list[tuple[int, dict[str, Any]]], outcomes: Counter[str],
          refused: list[tuple[int, str]]) -> None:
    """POST one request of labels; each answer counted against its row's line."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(f"{url}/v1/feedback", data=json.dumps([item for _, item in rows]).encode(),
                                     method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = {}
        if error.code != 207:
            message = (answer.get("error") or {}).get("message") or answer.get("message") or raw[:200].decode(
                "utf-8", "replace")
            raise CommandError(f"{url}/v1/feedback answered {error.code}: {message}") from None
    except (urllib.error.URLError, OSError) as error:
        raise CommandError(f"cannot reach {url}: {getattr(error, 'reason', error)}") from None
    for (line, _), result in zip(rows, answer.get("results", []), strict=True):
        if result["status"] == 202:
            outcomes[result.get("outcome", "accepted")] += 1
        else:
            error_detail = result.get("error", {})
            refused.append((line, f"{result['status']} {error_detail.get('code')}: {error_detail.get('message')}"))
