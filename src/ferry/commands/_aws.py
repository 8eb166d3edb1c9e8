"""What `ferry keys` and `ferry captures` share about AWS: the --region and --endpoint-url flags, boto3 made to
fail in seconds, and what boto3 raises told in one line (a missing table, credentials or region, an unreachable
endpoint)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ferry.commands._common import CommandError

# few retries: a wrong endpoint or a missing table should answer in seconds, not after botocore's backoff
RETRIES = {"max_attempts": 2, "mode": "standard"}
CONNECT_TIMEOUT_S = 5


def add_arguments(parser: argparse.ArgumentParser, endpoint_help: str) -> None:
    parser.add_argument("--region", help="AWS region (default: the AWS configuration's)")
    parser.add_argument("--endpoint-url", help=endpoint_help)


def _config(read_timeout_s: int) -> Any:
    from botocore.config import Config

    return Config(retries=RETRIES, connect_timeout=CONNECT_TIMEOUT_S, read_timeout=read_timeout_s)


def dynamodb(args: argparse.Namespace) -> Any:
    """The DynamoDB resource of `args.region` and `args.endpoint_url`."""
    import boto3

    return boto3.resource("dynamodb", region_name=args.region, endpoint_url=args.endpoint_url, config=_config(10))


def sqs(args: argparse.Namespace) -> Any:
    """The SQS client of `args.region` and `args.endpoint_url` (reads wait longer: a receive may long-poll)."""
    import boto3

    return boto3.client("sqs", region_name=args.region, endpoint_url=args.endpoint_url, config=_config(30))


def failure(exc: Exception, name: str, doing: str) -> CommandError:
    """One line for what boto3 raised while `doing` something in the table or queue `name`."""
    from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError

    if isinstance(exc, NoCredentialsError):
        return CommandError(f"cannot {doing} in {name}: no AWS credentials (configure them, or set AWS_PROFILE)")
    if isinstance(exc, NoRegionError):
        return CommandError(f"cannot {doing} in {name}: no AWS region (give --region, or set AWS_DEFAULT_REGION)")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        if error.get("Code") == "ResourceNotFoundException":
            return CommandError(
                f"cannot {doing}: no table {name} in this region/endpoint (use the stack's output name)")
        return CommandError(f"cannot {doing} in {name}: {error.get('Code', 'error')}: {error.get('Message', '')}")
    return CommandError(f"cannot {doing} in {name}: {exc}")


@contextmanager
def reported(name: str, doing: str) -> Iterator[None]:
    """What boto3 raises inside, as :func:`failure` tells it."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise failure(exc, name, doing) from None
