"""`ferry keys create | list | revoke`: the API keys of the apikey auth mode (:mod:`ferry.runtime.keys`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ferry.commands import _aws
from ferry.commands._common import Subparsers, restated

if TYPE_CHECKING:
    from ferry.runtime.keys import KeyInfo


def register(subparsers: Subparsers) -> None:
    keys = subparsers.add_parser("keys", help="API keys for the apikey auth mode")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help)
        parser.add_argument("--table", required=True, help="the stack's KeysTableName output")
        _aws.add_arguments(parser, "another DynamoDB endpoint (e.g. the local stack's)")
        return parser

    create = action("create", "make a key, store its salted hash, print the key once")
    create.add_argument("--name", default="default", help="who or what the key is for")
    create.add_argument("--daily-quota", type=_non_negative, metavar="N",
                        help="predictions a UTC day for this key; 0 for none (default: the stack's DailyQuota)")
    create.add_argument("--scope", action="append", choices=("predict", "feedback"), dest="scopes",
                        help="what the key may do, once per scope: predict (the predict and embed routes), "
                             "feedback (POST /v1/feedback); default: predict only")
    create.set_defaults(run=run_create)
    listing = action("list", "show every key: id, name, scopes, created, revoked, daily quota, today's usage")
    listing.add_argument("--usage-table", help="the stack's usage table, for today's usage (default: not shown)")
    listing.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    listing.set_defaults(run=run_list)
    revoke = action("revoke", "revoke a key by its id (API Gateway may accept it for up to 5 more minutes)")
    revoke.add_argument("key_id", type=_key_id, metavar="ID", help="the key's id (`ferry keys list`)")
    revoke.set_defaults(run=run_revoke)


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; 0 means no quota")
    return value


def _key_id(text: str) -> str:
    from ferry.runtime.keys import KEY_ID_RE

    if not KEY_ID_RE.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a key id (16 hex digits, as `ferry keys list` shows)")
    return text


def run_create(args: argparse.Namespace) -> int:
    from ferry.runtime.keys import DEFAULT_SCOPES, checked_scopes, new_key, store_key

    key = new_key()
    scopes = checked_scopes(args.scopes or DEFAULT_SCOPES)
    with _aws.reported(args.table, "store the key"):
        identifier = store_key(_aws.dynamodb(args).Table(args.table), key, args.name, quota=args.daily_quota,
                               scopes=scopes)
    quota = "the stack's daily quota" if args.daily_quota is None else (
        "no daily quota" if args.daily_quota == 0 else f"a daily quota of {args.daily_quota}")
    sys.stderr.write(f"ferry: key {identifier} ({args.name}, may {' and '.join(scopes)}, {quota}) stored as a "
                     "salted hash; it is shown once:\n")
    print(key)
    return 0


def run_list(args: argparse.Namespace) -> int:
    from ferry.runtime.keys import list_keys, usage_on, utc_day

    with _aws.reported(args.table, "list the keys"):
        dynamodb = _aws.dynamodb(args)
        keys = list_keys(dynamodb.Table(args.table))
    if args.usage_table:
        with _aws.reported(args.usage_table, "read today's usage"):
            used = usage_on(dynamodb, args.usage_table, [key.key_id for key in keys], utc_day(time.time()))
        keys = [dataclasses.replace(key, used_today=used.get(key.key_id, 0)) for key in keys]
    if args.json:
        print(json.dumps([key.to_dict() for key in keys], indent=2))
        return 0
    print(format_keys(keys))
    return 0


def format_keys(keys: Sequence[KeyInfo]) -> str:
    """`ferry keys list` as a table: a quota of None is the stack's, 0 none; usage of None was not read."""
    rows = [("ID", "NAME", "SCOPES", "CREATED (UTC)", "REVOKED", "DAILY QUOTA", "USED TODAY")]
    for key in keys:
        quota = "stack default" if key.quota is None else ("none" if key.quota == 0 else str(key.quota))
        rows.append((key.key_id, key.name, ",".join(key.scopes), key.created_utc, "revoked" if key.revoked else "no",
                     quota, "-" if key.used_today is None else str(key.used_today)))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines + ([] if keys else ["(no keys)"]))


def run_revoke(args: argparse.Namespace) -> int:
    from ferry.runtime.keys import ApiKeyError, revoke_key

    try:
        with _aws.reported(args.table, "revoke the key"):
            changed = revoke_key(_aws.dynamodb(args).Table(args.table), args.key_id)
    except ApiKeyError as exc:
        raise restated(exc, f"{exc} in {args.table}; `ferry keys list --table {args.table}` shows the ids") from None
    if changed:
        print(f"ferry: key {args.key_id} revoked; API Gateway may still accept it for up to 5 minutes "
              "(the authorizer's cache)")
    else:
        print(f"ferry: key {args.key_id} was already revoked")
    return 0
