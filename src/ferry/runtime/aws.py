"""The functions' AWS clients and resources: one of each per container, created at first use and reused.

The region and the endpoint are boto3's own environment variables (Lambda sets AWS_DEFAULT_REGION; the local
stack sets its moto server's AWS_ENDPOINT_URL); a resource is kept per pair, so that local stacks started one
after the other in one process each get their own.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from ferry.runtime.exceptions import SettingsError


def dynamodb() -> Any:
    return _make("resource", "dynamodb", os.environ.get("AWS_DEFAULT_REGION"), os.environ.get("AWS_ENDPOINT_URL"))


def client(service: str) -> Any:
    """A boto3 client of `service` (s3, stepfunctions...), one per container."""
    return _make("client", service, os.environ.get("AWS_DEFAULT_REGION"), os.environ.get("AWS_ENDPOINT_URL"))


@functools.cache
def _make(kind: str, service: str, region: str | None, endpoint: str | None) -> Any:
    import boto3

    return getattr(boto3, kind)(service, region_name=region, endpoint_url=endpoint)


def table(name: str | None, variable: str | None = None) -> Any:
    """The DynamoDB table `name`; None when it is not configured, unless `variable` names the setting that must
    give it (then a missing name is an error saying so; ``Settings.required`` says the same from a setting)."""
    if name:
        return dynamodb().Table(name)
    if variable is not None:
        raise SettingsError(f"{variable} is not set")
    return None
