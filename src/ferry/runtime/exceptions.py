"""Every error type of the runtime, under :class:`FerryRuntimeError` (a :class:`ferry.exceptions.FerryError`).

Each type carries its ``code`` and HTTP ``status``, so that the API answers an error from the error itself
(:func:`ferry.runtime.api.status_of`) and no caller keeps a table of types. Messages say what is wrong and what
to do, in the library's terms.

Every type is built from its message alone (``CaptureWriteError`` excepted, which carries what was written), so
that an error crosses a process boundary (pickled) intact. This module imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from ferry.exceptions import EXIT_USAGE, FerryError

if TYPE_CHECKING:
    from ferry.runtime.capture import CaptureResult


class FerryRuntimeError(FerryError):
    """Base class of every error the runtime raises on purpose."""

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500

    @property
    def headers(self) -> Mapping[str, str]:
        """HTTP headers the API's answer to this error carries besides its content type."""
        return {}


# -- models ------------------------------------------------------------------------------------------------------

class ModelNotFoundError(FerryRuntimeError):
    """No model folder of that name exists in the models search path."""

    code = "model_not_found"
    status = 404


class ManifestError(FerryRuntimeError):
    """A manifest is missing, unreadable, or does not describe a usable model."""

    code = "model_unavailable"
    status = 503


class IntegrityError(FerryRuntimeError):
    """A model file is missing or its sha256 does not match the manifest."""

    code = "model_unavailable"
    status = 503


class NoModelsError(FerryRuntimeError):
    """The models search path holds no model at all: nothing can be served."""

    code = "no_models"
    status = 503


# -- requests ----------------------------------------------------------------------------------------------------

class InvalidInputError(FerryRuntimeError):
    """The texts or options given for a prediction cannot be used (empty list, non-string, bad option)."""

    code = "invalid_input"
    status = 400


class UnsupportedTaskError(FerryRuntimeError):
    """The model was asked for something its task does not do (e.g. classify with an embedder)."""

    code = "wrong_task"
    status = 400


class PayloadTooLargeError(FerryRuntimeError):
    """A request over one of the configured limits (texts per request, characters per text, body size)."""

    code = "payload_too_large"
    status = 413


class InvalidBodyError(FerryRuntimeError):
    """A request body the API will not take: JSON nested too deep, a number Python will not convert, NaN or
    Infinity, base64 that is not base64 of UTF-8 text."""

    code = "invalid_request"
    status = 400


class UnsupportedMediaTypeError(FerryRuntimeError):
    """A request body that is not declared as JSON."""

    code = "unsupported_media_type"
    status = 415


class QuotaExceededError(FerryRuntimeError):
    """The API key of a request has used its daily quota; ``retry_after`` is when it may ask again (seconds)."""

    code = "quota_exceeded"
    status = 429

    def __init__(self, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after


    @property
    def headers(self) -> Mapping[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


class ForbiddenError(FerryRuntimeError):
    """The API key of a request lacks the scope its route needs (``predict`` or ``feedback``, see
    :mod:`ferry.runtime.keys`)."""

    code = "forbidden"
    status = 403


# -- the large model: a SageMaker endpoint (ferry.runtime.generation, ferry.runtime.endpoint_client) ----------------

class UnsupportedParameterError(InvalidInputError):
    """A generation parameter the API knows but does not serve (``grammar``, ``best_of`` over 1, ``n`` over 1,
    ``tools``...), or a streaming request: HTTP APIs cannot stream."""

    code = "unsupported_parameter"


class ModelRejectedError(FerryRuntimeError):
    """The model's container refused the request as the client's fault (a 4xx of its own behind SageMaker's
    ModelError, e.g. a prompt longer than the model's context): its own message, as a 400."""

    code = "rejected_by_model"
    status = 400


class _RetryLater(FerryRuntimeError):
    """An upstream answer worth trying again after ``retry_after`` seconds (None: no advice)."""

    def __init__(self, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def headers(self) -> Mapping[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


class EndpointThrottledError(_RetryLater):
    """SageMaker (or the model's container) throttled the call, still after the function's own retries."""

    code = "throttled"
    status = 429


class ModelFailedError(FerryRuntimeError):
    """The model's container failed (SageMaker's ModelError for a 5xx of the container): its own message."""

    code = "model_error"
    status = 502


class EndpointError(FerryRuntimeError):
    """The endpoint call failed for a reason the client cannot fix (SageMaker's own failure, an answer that is not
    the dialect's, a call SageMaker refused): a generic message; the details are in the function's log."""

    code = "upstream_error"
    status = 502


class EndpointUnavailableError(_RetryLater):
    """The endpoint does not exist, is not InService (Creating, Updating, Failed...), or cannot be reached."""

    code = "endpoint_unavailable"
    status = 503


class EndpointTimeoutError(FerryRuntimeError):
    """The endpoint did not answer within the function's read (or connect) timeout."""

    code = "model_timeout"
    status = 504


# -- feedback ----------------------------------------------------------------------------------------------------

class PredictionNotFoundError(FerryRuntimeError):
    """A prediction id this stack did not issue: not of the shape of one, or its mac does not match
    (:mod:`ferry.runtime.ids`)."""

    code = "prediction_not_found"
    status = 404


class InvalidLabelError(FerryRuntimeError):
    """Feedback with a label the prediction's model does not have."""

    code = "invalid_label"
    status = 400


class LabelConflictError(FerryRuntimeError):
    """Feedback whose label differs from the one already stored for the prediction, without ``"correct": true``
    (or a prediction corrected too many times)."""

    code = "label_conflict"
    status = 409


class FeedbackWriteError(FerryRuntimeError):
    """The feedback table did not take a label, after retries (throttled, failing): sending it again is safe (the
    same label twice counts once)."""

    code = "feedback_not_written"
    status = 503


class LabelFileError(FerryRuntimeError):
    """A file under ``labels/`` that cannot be read as labels at all (an unknown format, a CSV header without
    prediction_id and label): refused whole, as no retry can help."""

    code = "invalid_label_file"
    status = 400


# -- configuration -----------------------------------------------------------------------------------------------

class SettingsError(FerryRuntimeError):
    """An environment variable holds a value the runtime cannot use, or a needed one is not set."""

    code = "invalid_settings"
    exit_status = EXIT_USAGE


# -- batch files -------------------------------------------------------------------------------------------------

class BatchInputError(FerryRuntimeError):
    """An S3 object that cannot be a batch input (wrong place, unknown format, no text column): refused, as no
    retry can help."""

    code = "invalid_batch_input"
    status = 400


class BatchIncompleteError(FerryRuntimeError):
    """A file that could not be finished (too little time left, records unaccounted for): nothing is marked
    done, and the handler raises so that Lambda retries it and then records it in the dead-letter queue."""

    code = "batch_incomplete"
    status = 503


# -- captures ----------------------------------------------------------------------------------------------------

class CaptureEventError(FerryRuntimeError):
    """A subscription event that is not base64-encoded gzip of CloudWatch Logs JSON."""

    code = "invalid_capture_event"
    status = 400


class CaptureWriteError(FerryRuntimeError):
    """Some records of a delivery were not written. The capture function raises it so that Lambda retries the
    event and, after its retries, sends it to the dead-letter queue (from which a replay writes it); `result`
    says what was written before."""

    code = "captures_not_written"
    status = 503

    def __init__(self, result: CaptureResult):
        self.result = result
        causes = ", ".join(f"{code} x{count}" for code, count in result.errors.most_common())
        super().__init__(f"{result.failed} captures not written ({causes}); {result.written} written, "
                         f"{result.duplicates} already there")



# -- API keys ----------------------------------------------------------------------------------------------------

class ApiKeyError(FerryRuntimeError):
    """A key that cannot be stored (too short, already there, a negative quota) or changed (no such id)."""

    code = "invalid_api_key"
    status = 400


# -- the model registry ------------------------------------------------------------------------------------------

class RegistryError(FerryRuntimeError):
    """The model registry (:mod:`ferry.runtime.registry`) cannot do what was asked: no such version, nothing to
    roll back to, another version live or in canary already."""

    code = "registry_error"
    status = 409


class TransitionError(RegistryError):
    """A change of a version's status that the registry does not allow (from and to named in the message, and in
    ``current`` and ``target`` when given)."""

    code = "invalid_transition"
    status = 409

    def __init__(self, message: str, *, current: str | None = None, target: str | None = None):
        super().__init__(message)
        self.current = current
        self.target = target


class ConflictError(RegistryError):
    """A concurrent writer changed the registry between this writer's read and its write (a condition failed):
    nothing of this write was kept; read again and decide again."""

    code = "registry_conflict"
    status = 409
