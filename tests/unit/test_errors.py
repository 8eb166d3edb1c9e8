"""One hierarchy of errors, each carrying its code and HTTP status; the settings' one reader of the environment;
the batch keys' one owner."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path

import pytest

from ferry.exceptions import EXIT_USAGE, FerryError
from ferry.runtime import exceptions
from ferry.runtime.api import status_of
from ferry.runtime.batch import input_key, objects_of, output_keys, output_keys_of
from ferry.runtime.capture import CaptureResult
from ferry.runtime.constants import METRICS_NAMESPACE
from ferry.runtime.exceptions import BatchInputError, FerryRuntimeError
from ferry.runtime.settings import NO_LIMIT, Settings, SettingsError

# (type, code, HTTP status): the API's answers as they were when api.py kept a table of types
STATUSES = [
    (exceptions.PayloadTooLargeError, "payload_too_large", 413),
    (exceptions.ModelNotFoundError, "model_not_found", 404),
    (exceptions.UnsupportedTaskError, "wrong_task", 400),
    (exceptions.InvalidInputError, "invalid_input", 400),
    (exceptions.InvalidBodyError, "invalid_request", 400),
    (exceptions.IntegrityError, "model_unavailable", 503),
    (exceptions.ManifestError, "model_unavailable", 503),
    (exceptions.NoModelsError, "no_models", 503),
    (exceptions.UnsupportedMediaTypeError, "unsupported_media_type", 415),
    (exceptions.QuotaExceededError, "quota_exceeded", 429),
    (FerryRuntimeError, "internal_error", 500),
]


@pytest.mark.parametrize(("kind", "code", "status"), STATUSES, ids=[kind.__name__ for kind, _, _ in STATUSES])
def test_each_error_carries_its_status_and_code(kind, code, status):
    error = kind("what is wrong")
    assert status_of(error) == (status, code)
    assert isinstance(error, FerryError)


def test_every_runtime_error_is_under_one_base_and_survives_a_process_boundary():
    kinds = [value for value in vars(exceptions).values()
             if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == exceptions.__name__]
    assert all(issubclass(kind, FerryRuntimeError) for kind in kinds)
    assert len({kind.code for kind in kinds}) >= 14
    unwritten = CaptureResult(failed=1, errors=Counter({"Throttled": 1}))
    for kind in kinds:
        error = kind(unwritten) if kind is exceptions.CaptureWriteError else kind("message")
        again = pickle.loads(pickle.dumps(error))
        assert (type(again), str(again)) == (kind, str(error))
    quota = pickle.loads(pickle.dumps(exceptions.QuotaExceededError("over", retry_after=9)))
    assert quota.headers == {"Retry-After": "9"}
    assert SettingsError("x").exit_status == EXIT_USAGE


def test_the_old_homes_of_the_error_types_still_give_them():
    from ferry.runtime.api import InvalidBodyError
    from ferry.runtime.batch import BatchIncompleteError
    from ferry.runtime.capture import CaptureEventError, CaptureWriteError
    from ferry.runtime.keys import ApiKeyError
    from ferry.runtime.service import PayloadTooLargeError

    for kind in (InvalidBodyError, BatchIncompleteError, CaptureEventError, CaptureWriteError, ApiKeyError,
                 PayloadTooLargeError, SettingsError):
        assert getattr(exceptions, kind.__name__) is kind


def test_settings_read_the_environment_and_pass_the_models_path_explicitly(monkeypatch, tmp_path):
    env = {"FERRY_MODELS_DIR": f"{tmp_path}:/elsewhere", "POWERTOOLS_METRICS_NAMESPACE": "Mine"}
    settings = Settings.from_env(env)
    assert settings.models_path == (tmp_path, Path("/elsewhere")) and settings.metrics_namespace == "Mine"
    assert Settings.from_env({}).models_path == (Path("/opt/models"),)
    assert Settings.from_env({}).metrics_namespace == METRICS_NAMESPACE
    monkeypatch.setenv("FERRY_MODELS_DIR", str(tmp_path))
    assert Settings().models_path == (tmp_path,)


def test_settings_for_the_cli_serve_nobody(monkeypatch, tmp_path):
    monkeypatch.setenv("FERRY_ORT_THREADS", "2")
    monkeypatch.setenv("FERRY_STACK_SECRET", "s")
    local = Settings.for_models([tmp_path])
    assert local.models_path == (tmp_path,) and local.ort_threads == 2
    assert (local.max_inputs, local.max_input_chars) == (NO_LIMIT, NO_LIMIT)
    assert (local.stack_secret, local.capture_text, local.output_mode) == (None, False, "full")


def test_a_required_setting_names_its_variable():
    assert Settings(keys_table="keys").required("keys_table") == "keys"
    with pytest.raises(SettingsError, match="FERRY_CAPTURE_TABLE is not set"):
        Settings().required("capture_table")


def test_the_batch_keys_have_one_owner():
    key = input_key("tiny-bert", "reviews.v2.jsonl")
    assert key == "input/tiny-bert/reviews.v2.jsonl"
    event = {"Records": [{"s3": {"bucket": {"name": "b"}, "object": {"key": key, "eTag": '"abc"'}}}]}
    obj = next(objects_of(event))
    assert obj.outputs == output_keys("tiny-bert", "reviews.v2", "abc")
    assert obj.output_key == "output/tiny-bert/reviews.v2.abc.predictions.jsonl"
    assert obj.errors_key == "output/tiny-bert/reviews.v2.abc.errors.jsonl"
    assert obj.outputs.parts == "output/tiny-bert/reviews.v2.abc.parts/"
    assert output_keys_of(obj.output_key) == obj.outputs
    with pytest.raises(BatchInputError, match="is not a batch output"):
        output_keys_of("output/tiny-bert/reviews.jsonl")
