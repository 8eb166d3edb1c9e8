"""The runtime's configuration: read from the environment once per container, validated, frozen."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ferry.runtime.constants import (
    DEFAULT_BATCH_CHUNK_BYTES,
    DEFAULT_CAPTURE_TTL_DAYS,
    DEFAULT_DAILY_QUOTA,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_INPUT_CHARS,
    DEFAULT_MAX_INPUTS,
    ENV_BATCH_CHUNK_BYTES,
    ENV_BATCH_STATE_MACHINE,
    ENV_CAPTURE_TABLE,
    ENV_CAPTURE_TEXT,
    ENV_CAPTURE_TTL_DAYS,
    ENV_DAILY_QUOTA,
    ENV_KEYS_TABLE,
    ENV_MAX_BODY_BYTES,
    ENV_MAX_INPUT_CHARS,
    ENV_MAX_INPUTS,
    ENV_MODELS_DIR,
    ENV_ORT_THREADS,
    ENV_OUTPUT_MODE,
    ENV_PRELOAD,
    ENV_STACK_SECRET,
    ENV_USAGE_TABLE,
    OUTPUT_MODES,
)
from ferry.runtime.exceptions import FerryRuntimeError
from ferry.runtime.manifest import is_valid_name, models_search_path

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingsError(FerryRuntimeError):
    """An environment variable holds a value the runtime cannot use."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} must be at least {minimum}")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean (true/false)")


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    raw = env.get(name, "").strip().lower() or default
    if raw not in choices:
        raise SettingsError(f"{name}={raw!r} must be one of {', '.join(choices)}")
    return raw


def _preload(env: Mapping[str, str]) -> tuple[str, ...]:
    """Models to load at start: ("*",) for all of them, names otherwise, () for none."""
    raw = env.get(ENV_PRELOAD, "").strip()
    if raw.lower() in {"all", "*"}:
        return ("*",)
    names = tuple(name.strip() for name in raw.split(",") if name.strip())
    bad = [name for name in names if not is_valid_name(name)]
    if bad:
        raise SettingsError(f"{ENV_PRELOAD}={raw!r}: {bad[0]!r} is not a model name; give all, names a,b or nothing")
    return names


@dataclass(frozen=True)
class Settings:
    models_path: tuple[Path, ...] = field(default_factory=lambda: tuple(models_search_path()))
    max_inputs: int = DEFAULT_MAX_INPUTS
    max_input_chars: int = DEFAULT_MAX_INPUT_CHARS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    ort_threads: int = 0
    capture_text: bool = False
    capture_table: str | None = None
    capture_ttl_days: int = DEFAULT_CAPTURE_TTL_DAYS
    preload: tuple[str, ...] = ()
    output_mode: str = "full"
    stack_secret: str | None = None
    keys_table: str | None = None
    usage_table: str | None = None
    daily_quota: int = DEFAULT_DAILY_QUOTA
    batch_chunk_bytes: int = DEFAULT_BATCH_CHUNK_BYTES
    batch_state_machine: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            models_path=tuple(models_search_path(env.get(ENV_MODELS_DIR) or None)),
            max_inputs=_int(env, ENV_MAX_INPUTS, DEFAULT_MAX_INPUTS, 1),
            max_input_chars=_int(env, ENV_MAX_INPUT_CHARS, DEFAULT_MAX_INPUT_CHARS, 1),
            max_body_bytes=_int(env, ENV_MAX_BODY_BYTES, DEFAULT_MAX_BODY_BYTES, 1),
            ort_threads=_int(env, ENV_ORT_THREADS, 0, 0),
            capture_text=_bool(env, ENV_CAPTURE_TEXT),
            capture_table=env.get(ENV_CAPTURE_TABLE) or None,
            capture_ttl_days=_int(env, ENV_CAPTURE_TTL_DAYS, DEFAULT_CAPTURE_TTL_DAYS, 1),
            preload=_preload(env),
            output_mode=_choice(env, ENV_OUTPUT_MODE, OUTPUT_MODES, "full"),
            stack_secret=env.get(ENV_STACK_SECRET) or None,
            keys_table=env.get(ENV_KEYS_TABLE) or None,
            usage_table=env.get(ENV_USAGE_TABLE) or None,
            daily_quota=_int(env, ENV_DAILY_QUOTA, DEFAULT_DAILY_QUOTA, 0),
            batch_chunk_bytes=_int(env, ENV_BATCH_CHUNK_BYTES, DEFAULT_BATCH_CHUNK_BYTES, 1),
            batch_state_machine=env.get(ENV_BATCH_STATE_MACHINE) or None,
        )
