"""`ferry captures replay`: the capture dead-letter queue written to the capture table
(:func:`ferry.runtime.replay.replay_dead_letters`)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ferry.commands import _aws
from ferry.commands._common import CommandError, Subparsers, warn
from ferry.exceptions import EXIT_FAILED
from ferry.runtime.constants import DEFAULT_CAPTURE_TTL_DAYS

if TYPE_CHECKING:
    from ferry.runtime.replay import ReplayResult

MISSING_QUEUE = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")  # SQS's codes for it
TABLE_OPERATIONS = ("GetItem", "PutItem", "UpdateItem")  # the replay's calls to the tables (the rest: the queue)


def register(subparsers: Subparsers) -> None:
    captures = subparsers.add_parser("captures", help="captured predictions: replay the capture dead-letter queue")
    actions = captures.add_subparsers(dest="action", required=True, metavar="ACTION")
    replay = actions.add_parser(
        "replay", help="write the captures of the deliveries that failed, then delete their messages",
        description="Read the capture function's dead-letter queue (the subscription events Lambda gave up on), "
        "write their captures as the capture function does (once each: the same conditional put) and delete each "
        "message once its captures are in the table. Messages that are not subscription events are reported and "
        "left in the queue; exit status 1 when any message is left.")
    replay.add_argument("--queue", required=True,
                        help="the stack's CaptureDeadLetterQueueUrl output, or the queue's name")
    replay.add_argument("--table", required=True, help="the stack's CaptureTableName output")
    replay.add_argument("--usage-table", help="the stack's UsageTableName output: captures written count toward their "
                        "keys' daily usage, as the capture function counts them (default: not counted)")
    replay.add_argument("--ttl-days", type=_days, default=DEFAULT_CAPTURE_TTL_DAYS,
                        help="the stack's CaptureRetentionDays (default %(default)s)")
    _aws.add_arguments(replay, "another AWS endpoint (e.g. the local stack's embedded AWS)")
    replay.add_argument("--dry-run", action="store_true",
                        help="write and delete nothing; count the captures missing from the table")
    replay.set_defaults(run=run_replay)


def _days(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days (1 or more)")
    return int(text)


def run_replay(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from ferry.runtime.replay import replay_dead_letters

    try:
        sqs = _aws.sqs(args)
        queue_url = args.queue if "://" in args.queue else sqs.get_queue_url(QueueName=args.queue)["QueueUrl"]
        dynamodb = _aws.dynamodb(args)
        result = replay_dead_letters(sqs, queue_url, dynamodb.Table(args.table), args.ttl_days,
                                     dynamodb.Table(args.usage_table) if args.usage_table else None,
                                     dry_run=args.dry_run)
    except (BotoCoreError, ClientError) as exc:
        raise _failure(exc, args) from None
    for message_id, why in result.bad + result.failed:
        warn(f"message {message_id} left in the queue: {why}")
    for (key_id, day), count in result.usage_lost.items():
        warn(f"{count} predictions of key {key_id} on {day} not added to its usage")
    print(format_replay(result, args.queue, args.table, args.dry_run))
    return EXIT_FAILED if result.left else 0


def _failure(exc: Exception, args: argparse.Namespace) -> CommandError:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in MISSING_QUEUE:
        return CommandError(f"no queue {args.queue} in this region/endpoint "
                            "(use the stack's CaptureDeadLetterQueueUrl output)")
    on_table = isinstance(exc, ClientError) and exc.operation_name in TABLE_OPERATIONS
    return _aws.failure(exc, args.table if on_table else args.queue, "replay the captures")


def format_replay(result: ReplayResult, queue: str, table: str, dry_run: bool) -> str:
    """`ferry captures replay`'s summary: messages replayed, captures written, already there and invalid."""
    def plural(count: int, noun: str) -> str:
        return f"{count} {noun}{'' if count == 1 else 's'}"

    if dry_run:
        line = (f"dry run: {plural(result.messages, 'message')} of {queue} to replay: "
                f"{result.written} captures missing from {table}, {result.duplicates} already there, "
                f"{result.invalid} invalid; nothing written or deleted")
    else:
        line = (f"replayed {plural(result.messages, 'message')} of {queue}: {result.written} captures written to "
                f"{table}, {result.duplicates} already there, {result.invalid} invalid")
        if result.usage:
            line += f"; {sum(result.usage.values())} counted toward their keys' usage"
    if result.left:
        line += f"; {plural(result.left, 'message')} left in the queue"
    return line
