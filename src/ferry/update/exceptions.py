"""Errors of an update, each naming what to do about it."""

from __future__ import annotations

from ferry.exceptions import EXIT_USAGE, FerryError


class UpdateError(FerryError):
    """An update could not run or finish (its record in the registry says which step and why)."""

    code = "update_failed"


class InvalidUpdateConfigError(UpdateError):
    code = "invalid_update_config"
    exit_status = EXIT_USAGE
