"""Every error the endpoint server raises on purpose, under :class:`EndpointError`.

Each type carries the HTTP status the container answers with (``status``) and a stable ``code`` (the body's
``error_type``), so that the server turns any of them into an answer in one place. 4xx only for what the client
sent; a model that cannot be loaded is the operator's problem (exit status 1 or 2 on the command line).
"""

from __future__ import annotations

from typing import ClassVar

from ferry.exceptions import EXIT_USAGE, FerryError


class EndpointError(FerryError):
    """Base class of every error the endpoint server raises on purpose."""

    code: ClassVar[str] = "endpoint_error"


class InvalidRequestError(EndpointError):
    """A request body the server will not run: a missing or mistyped field, a value out of bounds, an unknown
    parameter. ``field`` names the parameter at fault."""

    code = "invalid_request"
    status = 400


class PromptTooLongError(InvalidRequestError):
    """The prompt and the tokens asked for do not fit in the model's context."""

    code = "prompt_too_long"


class UnsupportedFeatureError(InvalidRequestError):
    """A request for something the protocol has and this server does not do (streaming, several choices)."""

    code = "unsupported"


class NoChatTemplateError(InvalidRequestError):
    """A chat request to a model whose tokenizer has no chat template: only ``inputs`` can be sent to it."""

    code = "no_chat_template"


class BodyTooLargeError(EndpointError):
    """A request body over the server's limit."""

    code = "body_too_large"
    status = 413


class UnsupportedMediaTypeError(EndpointError):
    """A request body that is not JSON."""

    code = "unsupported_media_type"
    status = 415


class ModelNotFoundError(EndpointError):
    """The folder to serve holds no model: not built yet, or not a Hugging Face folder."""

    code = "model_not_found"
    exit_status = EXIT_USAGE


class ModelLoadError(EndpointError):
    """The folder holds a model that transformers cannot load."""

    code = "model_load_failed"


class ListenError(EndpointError):
    """The server cannot listen on the address asked for (taken, or not this machine's)."""

    code = "cannot_listen"


class BusyError(EndpointError):
    """More requests are waiting for the model than the server's queue holds: DJL Serving answers a full job queue
    with 503, and SageMaker's runtime turns it into a throttling error."""

    code = "service_unavailable"
    status = 503


class NotReadyError(EndpointError):
    """The model is still loading, or failed to load (the server's log says why)."""

    code = "model_not_ready"
    status = 503
