"""Prediction ids that prove where they come from: Ferry can tell an id it issued from any other string at once,
without a lookup.

**Why.** Feedback (``POST /v1/feedback``) names a prediction by its id. Captures reach DynamoDB asynchronously
(a log subscription, seconds later, at least once), so a label can arrive before its prediction's capture: the
capture table cannot say whether an id is real. An id that carries its model, its version and a MAC under the
stack's secret can: an id this stack never issued is refused (404) before anything is read or written, and a real
one is accepted whenever it comes, to be joined with its capture once that lands. The model and version in the id
are also what the feedback function checks the label against, with no capture to read.

**The shape** (``p1`` is the format's version; a later format takes another prefix)::

    p1.<model>.<version>.<nonce>.<mac>
    p1.sentiment.1a2b3c4d5e6f.9f0c1d2e3a4b5c6d7e8f.0123456789abcdef

- ``model``: the model's name (``[a-z0-9][a-z0-9-]{0,62}``: no dot, so the id splits unambiguously);
- ``version``: the model version that answered, 12 hex digits (the manifest's ``version``);
- ``nonce``: 20 hex digits (80 bits): random for a request (``os.urandom``), derived from the file, the file's
  version and the line for a batch record, so that rerunning a file issues the same ids and captures nothing
  twice. Two random nonces of the same model version collide after about 2^40 (10^12) predictions;
- ``mac``: 16 hex digits (64 bits), keyed BLAKE2b of ``p1.<model>.<version>.<nonce>`` truncated to 8 bytes. Keyed
  BLAKE2b is a MAC by design (RFC 7693; no HMAC construction needed) and cost 0.8 us an id here against 2.2 us
  for HMAC-SHA256; guessing a valid mac takes 2^63 tries on average, each one a request. Compared in constant
  time (:func:`hmac.compare_digest`).

**The key.** Derived from the per-stack secret (``FERRY_STACK_SECRET``, Settings.stack_secret) as
HMAC-SHA256(secret, ``"ferry prediction ids p1"``), never the secret itself: the capture records' ``text_hmac`` is
HMAC-SHA256 of a text under the raw secret, and a client choosing its text must not obtain a valid id that way.
Without a secret (the CLI predicting from local files, a stack run without one) the key derives from the fixed,
public :data:`UNKEYED_SECRET`: such ids are checked for their shape and that key only, which proves nothing
about who made them. Ids made with one secret are refused by a stack with another: rotating the secret
invalidates every id issued before.

An id is at most 117 characters (a 63-character model name), 63 for a model called ``sentiment``; the 64 ids of
a full request fill ``x-ferry-prediction-ids`` with about 4 KB. Light: standard library only.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass

from ferry.runtime.constants import VERSION_HEX_DIGITS
from ferry.runtime.exceptions import PredictionNotFoundError

ID_FORMAT = "p1"
NONCE_HEX_DIGITS = 20
MAC_HEX_DIGITS = 16
# The key of a process without a stack secret: public on purpose, so ids made without one are recognisable as such.
UNKEYED_SECRET = b"ferry: prediction ids issued without a stack secret prove nothing"
_KEY_CONTEXT = b"ferry prediction ids p1"

# One id, as a regular expression without anchors (the OpenAPI header pattern repeats it); groups: model, version,
# nonce, mac.
PREDICTION_ID_PATTERN = (rf"{ID_FORMAT}\.([a-z0-9][a-z0-9-]{{0,62}})\.([0-9a-f]{{{VERSION_HEX_DIGITS}}})\."
                         rf"([0-9a-f]{{{NONCE_HEX_DIGITS}}})\.([0-9a-f]{{{MAC_HEX_DIGITS}}})")
_ID_RE = re.compile(PREDICTION_ID_PATTERN)
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_VERSION_RE = re.compile(rf"[0-9a-f]{{{VERSION_HEX_DIGITS}}}")
_NONCE_RE = re.compile(rf"[0-9a-f]{{{NONCE_HEX_DIGITS}}}")
_LEGACY_RE = re.compile(r"[0-9a-f]{32}")  # the random ids of Ferry before ids carried a mac
MAX_ID_CHARS = 3 + 63 + 1 + VERSION_HEX_DIGITS + 1 + NONCE_HEX_DIGITS + 1 + MAC_HEX_DIGITS
_SHOWN_CHARS = 2 * MAX_ID_CHARS  # an error message quotes at most this much of what it was given


@dataclass(frozen=True)
class IssuedId:
    """What a verified id says: the model and version that made the prediction, and its nonce."""

    model: str
    version: str
    nonce: str

    @property
    def model_version(self) -> str:
        """``model#version``: the key the capture and feedback tables index windows by."""
        return f"{self.model}#{self.version}"


class PredictionIds:
    """Issues and verifies the ids of one stack (one secret); cheap enough to run for every prediction.

    `secret` is the stack's secret (text or bytes); None or empty: the public :data:`UNKEYED_SECRET`."""

    def __init__(self, secret: bytes | str | None):
        raw = secret.encode("utf-8") if isinstance(secret, str) else secret
        self.keyed = bool(raw)
        key = hmac.digest(raw or UNKEYED_SECRET, _KEY_CONTEXT, "sha256")
        self._mac = hashlib.blake2b(key=key, digest_size=MAC_HEX_DIGITS // 2)  # copied for each id: no key setup

    def _sign(self, body: str) -> str:
        mac = self._mac.copy()
        mac.update(body.encode("ascii"))
        return mac.hexdigest()

    def issue(self, model: str, version: str, nonce: str | None = None) -> str:
        """A new id for a prediction of `model` at `version`: with a random nonce, or with `nonce` (20 hex digits)
        when the caller derives one (a batch record's). A name, version or nonce of another shape is a bug in
        the caller (a manifest's name and version are checked when it loads): ValueError."""
        if nonce is None:
            nonce = os.urandom(NONCE_HEX_DIGITS // 2).hex()
        elif not _NONCE_RE.fullmatch(nonce):
            raise ValueError(f"a prediction id's nonce is {NONCE_HEX_DIGITS} hex digits, not {nonce!r}")
        if not _NAME_RE.fullmatch(model) or not _VERSION_RE.fullmatch(version):
            raise ValueError(f"cannot issue a prediction id for model {model!r} at version {version!r}: a name is "
                             f"[a-z0-9][a-z0-9-]{{0,62}}, a version {VERSION_HEX_DIGITS} hex digits")
        body = f"{ID_FORMAT}.{model}.{version}.{nonce}"
        return f"{body}.{self._sign(body)}"

    def parse(self, prediction_id: object) -> IssuedId:
        """The model, version and nonce of an id this stack issued; :class:`PredictionNotFoundError` (404) for
        anything else, saying whether it is no prediction id at all or one made under another secret."""
        if not isinstance(prediction_id, str):
            raise PredictionNotFoundError(f"a prediction id is a string, not {type(prediction_id).__name__}")
        match = _ID_RE.fullmatch(prediction_id)
        if match is None:
            raise PredictionNotFoundError(_malformed(prediction_id))
        model, version, nonce, mac = match.groups()
        expected = self._sign(prediction_id[: -MAC_HEX_DIGITS - 1])
        if not hmac.compare_digest(mac, expected):
            raise PredictionNotFoundError(f"prediction id {prediction_id!r} was not issued by this stack (its "
                                          "signature does not match): use an id from x-ferry-prediction-ids or a "
                                          "batch output of this deployment")
        return IssuedId(model, version, nonce)


def _malformed(value: str) -> str:
    shown = repr(value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "...")
    if _LEGACY_RE.fullmatch(value):
        return (f"prediction id {shown} was issued before prediction ids were verifiable and cannot take feedback; "
                "only ids of the shape p1.<model>.<version>.<nonce>.<mac> can")
    return (f"{shown} is not a prediction id: Ferry issues p1.<model>.<version>.<{NONCE_HEX_DIGITS} hex>."
            f"<{MAC_HEX_DIGITS} hex> (as x-ferry-prediction-ids and batch outputs give them)")
