"""The runtime's configuration: read from the environment once per container, validated, frozen.

This module is the only reader of the runtime's environment variables (their names are in
:mod:`ferry.runtime.constants`): every other module is handed a :class:`Settings`, or a value from one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ferry.runtime.constants import (
    DEFAULT_BATCH_CHUNK_BYTES,
    DEFAULT_CAPTURE_TTL_DAYS,
    DEFAULT_DAILY_QUOTA,
    DEFAULT_GENERATE_MAX_NEW_TOKENS,
    DEFAULT_GENERATE_TIMEOUT_S,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_INPUT_CHARS,
    DEFAULT_MAX_INPUTS,
    DEFAULT_MODELS_DIR,
    DEFAULT_MONITOR_SETTLE_SECONDS,
    DEFAULT_MONITOR_WINDOW_MINUTES,
    ENV_BATCH_CHUNK_BYTES,
    ENV_BATCH_STATE_MACHINE,
    ENV_CAPTURE_TABLE,
    ENV_CAPTURE_TEXT,
    ENV_CAPTURE_TTL_DAYS,
    ENV_DAILY_QUOTA,
    ENV_EVENT_BUS,
    ENV_FEEDBACK_TABLE,
    ENV_GENERATE_ENDPOINT,
    ENV_GENERATE_MAX_NEW_TOKENS,
    ENV_GENERATE_MODEL,
    ENV_GENERATE_TIMEOUT_S,
    ENV_GENERATE_VERSION,
    ENV_KEYS_TABLE,
    ENV_MAX_BODY_BYTES,
    ENV_MAX_INPUT_CHARS,
    ENV_MAX_INPUTS,
    ENV_METRICS_NAMESPACE,
    ENV_MODELS_DIR,
    ENV_MONITOR_SETTLE_SECONDS,
    ENV_MONITOR_TABLE,
    ENV_MONITOR_WINDOW_MINUTES,
    ENV_ORT_THREADS,
    ENV_OUTPUT_MODE,
    ENV_PRELOAD,
    ENV_STACK_SECRET,
    ENV_USAGE_TABLE,
    METRICS_NAMESPACE,
    OUTPUT_MODES,
    VERSION_HEX_DIGITS,
)
from ferry.runtime.exceptions import SettingsError as SettingsError  # importable from here as before
from ferry.runtime.manifest import is_valid_name, models_search_path

if TYPE_CHECKING:
    from ferry.runtime.monitor import MonitorConfig

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
NO_LIMIT = sys.maxsize  # a limit that no request reaches: Settings.for_models, for a process that serves nobody


def configured_models_path(env: Mapping[str, str] | None = None) -> tuple[Path, ...] | None:
    """The folders FERRY_MODELS_DIR names (one, or several separated by os.pathsep), or None when it is not set:
    for a caller with a default of its own (the CLI looks in its folder of layers)."""
    value = (os.environ if env is None else env).get(ENV_MODELS_DIR)
    return tuple(models_search_path(value)) if value else None


def _models_path(env: Mapping[str, str]) -> tuple[Path, ...]:
    """FERRY_MODELS_DIR (one folder, or several separated by os.pathsep), else /opt/models."""
    configured = configured_models_path(env)
    return tuple(models_search_path(DEFAULT_MODELS_DIR)) if configured is None else configured


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


def _generate_model(env: Mapping[str, str]) -> str | None:
    """FERRY_GENERATE_MODEL: the large model's API name, or None (unset or empty: no large model)."""
    raw = env.get(ENV_GENERATE_MODEL, "").strip()
    if raw and not is_valid_name(raw):
        raise SettingsError(f"{ENV_GENERATE_MODEL}={raw!r} is not a model name ([a-z0-9][a-z0-9-]{{0,62}})")
    return raw or None


def _generate_version(env: Mapping[str, str]) -> str | None:
    raw = env.get(ENV_GENERATE_VERSION, "").strip().lower()
    if raw and (len(raw) != VERSION_HEX_DIGITS or any(c not in "0123456789abcdef" for c in raw)):
        raise SettingsError(f"{ENV_GENERATE_VERSION}={raw!r} is not {VERSION_HEX_DIGITS} hex digits")
    return raw or None


@dataclass(frozen=True)
class Settings:
    models_path: tuple[Path, ...] = field(default_factory=lambda: _models_path(os.environ))
    max_inputs: int = DEFAULT_MAX_INPUTS
    max_input_chars: int = DEFAULT_MAX_INPUT_CHARS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    ort_threads: int = 0
    capture_text: bool = False
    capture_table: str | None = None
    capture_ttl_days: int = DEFAULT_CAPTURE_TTL_DAYS  # captures' and feedback's time to live
    preload: tuple[str, ...] = ()
    output_mode: str = "full"
    stack_secret: str | None = None
    keys_table: str | None = None
    usage_table: str | None = None
    daily_quota: int = DEFAULT_DAILY_QUOTA
    batch_chunk_bytes: int = DEFAULT_BATCH_CHUNK_BYTES
    batch_state_machine: str | None = None
    feedback_table: str | None = None
    monitor_table: str | None = None
    event_bus: str | None = None
    monitor_window_minutes: int = DEFAULT_MONITOR_WINDOW_MINUTES
    monitor_settle_seconds: int = DEFAULT_MONITOR_SETTLE_SECONDS
    metrics_namespace: str = METRICS_NAMESPACE
    generate_model: str | None = None  # the large model's API name (None: no large model is served)
    generate_endpoint: str | None = None  # the SageMaker endpoint that serves it
    generate_version: str | None = None  # None: derived from the model's and the endpoint's names
    generate_max_new_tokens: int = DEFAULT_GENERATE_MAX_NEW_TOKENS
    generate_timeout_s: int = DEFAULT_GENERATE_TIMEOUT_S

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            models_path=_models_path(env),
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
            feedback_table=env.get(ENV_FEEDBACK_TABLE) or None,
            monitor_table=env.get(ENV_MONITOR_TABLE) or None,
            event_bus=env.get(ENV_EVENT_BUS) or None,
            monitor_window_minutes=_int(env, ENV_MONITOR_WINDOW_MINUTES, DEFAULT_MONITOR_WINDOW_MINUTES, 1),
            monitor_settle_seconds=_int(env, ENV_MONITOR_SETTLE_SECONDS, DEFAULT_MONITOR_SETTLE_SECONDS, 0),
            metrics_namespace=env.get(ENV_METRICS_NAMESPACE) or METRICS_NAMESPACE,
            generate_model=_generate_model(env),
            generate_endpoint=env.get(ENV_GENERATE_ENDPOINT, "").strip() or None,
            generate_version=_generate_version(env),
            generate_max_new_tokens=_int(env, ENV_GENERATE_MAX_NEW_TOKENS, DEFAULT_GENERATE_MAX_NEW_TOKENS, 1),
            generate_timeout_s=_int(env, ENV_GENERATE_TIMEOUT_S, DEFAULT_GENERATE_TIMEOUT_S, 1),
        )

    @classmethod
    def for_models(cls, models_path: Iterable[Path | str], env: Mapping[str, str] | None = None) -> Settings:
        """Settings for a process that uses models on this machine rather than serving them (the CLI): models
        from `models_path` (e.g. the ``models/`` folders of a layers folder), ONNX Runtime's threads from the
        environment, no limit on texts or characters (texts are still checked), every label in answers, and
        nothing keyed, captured or stored (no stack secret, no tables)."""
        env = os.environ if env is None else env
        return cls(models_path=tuple(Path(path) for path in models_path), max_inputs=NO_LIMIT,
                   max_input_chars=NO_LIMIT, ort_threads=_int(env, ENV_ORT_THREADS, 0, 0))

    def monitor_config(self) -> MonitorConfig:
        """How the monitor reads: its window and settle time from here, its tests' defaults from ferry.runtime.stats."""
        from ferry.runtime.monitor import MonitorConfig

        return MonitorConfig(window_minutes=self.monitor_window_minutes, settle_seconds=self.monitor_settle_seconds)

    def required(self, name: str) -> str:
        """The value of the setting `name` (``keys_table``, ``capture_table``...), which this function cannot
        work without: unset, it is an error naming the environment variable to set."""
        value = getattr(self, name)
        if not value:
            raise SettingsError(f"{_ENV_OF.get(name, name)} is not set")
        return str(value)


_ENV_OF = {
    "capture_table": ENV_CAPTURE_TABLE,
    "keys_table": ENV_KEYS_TABLE,
    "usage_table": ENV_USAGE_TABLE,
    "stack_secret": ENV_STACK_SECRET,
    "monitor_table": ENV_MONITOR_TABLE,
    "batch_state_machine": ENV_BATCH_STATE_MACHINE,
    "feedback_table": ENV_FEEDBACK_TABLE,
    "generate_model": ENV_GENERATE_MODEL,
    "generate_endpoint": ENV_GENERATE_ENDPOINT,
}
