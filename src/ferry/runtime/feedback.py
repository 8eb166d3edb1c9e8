"""Ground truth in: labels for predictions, from ``POST /v1/feedback`` and from files dropped under ``labels/``.

**What is checked, in order, for each label.** Its shape (an object with ``prediction_id`` and ``label``, maybe
``correct`` and ``sampled``; an unknown field is named: 400); its prediction id, verified without a lookup
(:mod:`ferry.runtime.ids`: an id this stack did not issue is a 404, and a real one is accepted before its capture
has landed, which it may not have: captures are asynchronous); the id's model, among the models this function
has (the same model layers as the predict function; one no longer served is a 404, an embedder, which has no
labels, a 400); the label, among that model's labels in the live manifest (``invalid_label``: 400 naming them).
A prediction made by an earlier version of the model is accepted when its label is one the live version has.

**How it is written: once.** A conditional put on the prediction id (``attribute_not_exists``). When the id has a
label already, the item is read: the same label is a duplicate (answered as accepted, ``"duplicate": true``,
counted once); another label is a 409 ``label_conflict`` naming the stored one, unless the feedback says
``"correct": true``: then a conditional update (``label = :old``) replaces it and appends what it replaced to the
item's ``corrections``. A duplicate marked ``sampled`` marks the stored label sampled too: an audit sample that
picked a prediction someone had labelled already must still count in the sampled population, or the unbiased
accuracy would leave out exactly the predictions that drew voluntary labels (mostly mistakes). Throttled and
failed calls are retried like the capture function's (:class:`ferry.runtime.capture.Retrier`); a label still not
written is a 503 ``feedback_not_written``, and sending it again is safe.

**The feedback table** (``FERRY_FEEDBACK_TABLE``; retained, TTL on ``expires_at``)::

    prediction_id  S  hash key
    GSI "by-model-time" (FEEDBACK_INDEX): model_version S (hash), epoch_ms N (range), projection ALL

and each item::

    prediction_id, model, version, model_version ("model#version", as the capture table's index key),
    label, sampled (bool), epoch_ms (N) and time (ISO 8601, UTC): when the prediction got its first label,
    key_id (the API key that sent that label; absent without API keys), source ("api", or
    "bulk:<s3 key>:<line>"), expires_at (N, epoch seconds: that time plus Settings.capture_ttl_days),
    and once corrected: corrected_at (N, epoch ms) and corrections, a list of
    {previous_label, label, epoch_ms, time, source, key_id (when there is one)}, oldest first (at most
    MAX_CORRECTIONS: then a further correction is a 409).

``epoch_ms`` stays the time of the first label, so a label stays in the window it was first counted in; the
current label is ``label``, and the last correction says who changed it and when.

**Answers.** One object: its status (202, or the error's) with ``{"prediction_id", "status", "duplicate"}`` or the
API's ``{"error": {"code", "message"}}``. A list of 1 to MAX_FEEDBACK_ITEMS: 202 when every label was accepted, else
207, with ``{"accepted", "refused", "results": [{"prediction_id", "status", "outcome" | "error"}]}`` in the list's
order; each label is answered on its own, never all or nothing. Over MAX_FEEDBACK_ITEMS: 413, nothing written.

**Bulk.** A CSV (a header with ``prediction_id`` and ``label``, optionally ``sampled`` and ``correct``) or JSONL
(one label object a line) put under ``labels/`` is read line by line with the batch function's reader
(:class:`ferry.runtime.batch.Lines`: bounded lines, a byte order mark dropped, CSV decoded so that a bad byte
costs its row); every row that is not blank is accepted or rejected with its line number, ``rows == accepted +
rejected``, and ``labels-report/<name after labels/>.json`` says so, with the first MAX_REPORTED_ERRORS errors.

**Metrics.** Per model, one EMF line a request or file: ``FeedbackAccepted`` (written: new or corrected),
``FeedbackDuplicates`` and ``FeedbackRefused`` (a refusal whose id names no model of this stack counts under the
model ``unknown``).
"""

from __future__ import annotations

import functools
import io
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import unquote_plus

from pydantic import ValidationError

from ferry.runtime.api import FeedbackItem, error_body, validation_error
from ferry.runtime.batch import _ESCAPED_BYTE, Lines, csv_rows
from ferry.runtime.capture import SECONDS_PER_DAY, Backoff, Retrier, error_code
from ferry.runtime.constants import MAX_FEEDBACK_ITEMS, TEXT_CLASSIFICATION, TEXT_GENERATION
from ferry.runtime.exceptions import (
    FeedbackWriteError,
    FerryRuntimeError,
    InvalidBodyError,
    InvalidLabelError,
    LabelConflictError,
    LabelFileError,
    ModelNotFoundError,
    PayloadTooLargeError,
    UnsupportedTaskError,
)
from ferry.runtime.ids import IssuedId, PredictionIds
from ferry.runtime.manifest import Manifest, resolve_model_dir
from ferry.runtime.settings import Settings
from ferry.runtime.telemetry import Log, MetricSink, add_count

FEEDBACK_INDEX = "by-model-time"  # the feedback table's GSI: model_version (hash), epoch_ms (range)
SOURCE_API = "api"
ACCEPTED, DUPLICATE, CORRECTED = "accepted", "duplicate", "corrected"
MAX_CORRECTIONS = 20  # corrections kept on one item: bounds the item (DynamoDB's 400 KB) against a flip-flopping key
UNKNOWN_MODEL = "unknown"  # the model dimension of a refusal whose id names no model of this stack
# A request's writes: a few quick retries within two seconds (the client waits); a file's: the capture function's.
API_BACKOFF = Backoff(attempts=4, base_s=0.05, cap_s=0.5, budget_s=2.0, usage_grace_s=0.0)
_NEW_ONLY = "attribute_not_exists(prediction_id)"
_SETTLE_TRIES = 3  # reads and conditional updates of one label racing other writers of the same prediction

LABELS_PREFIX = "labels/"
REPORTS_PREFIX = "labels-report/"
LABEL_FORMATS = (".csv", ".jsonl")
LABEL_LINE_BYTES = 64 * 1024  # a label line is an id and a label: anything longer is an error of its own
MAX_REPORTED_ERRORS = 100
LABELS_MARGIN_MS = 30_000  # a file stops being read when less of the function's time is left
_CSV_REQUIRED = ("prediction_id", "label")
_CSV_FLAGS = ("sampled", "correct")
_CSV_OPTIONAL = ("text",)  # kept as written (not stripped); an empty cell: no text
_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no", ""})


# -- one label ----------------------------------------------------------------------------------------------------

def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def parse_item(value: Any) -> FeedbackItem:
    """One label as the API, the bulk files and the CLI give it, checked (:class:`InvalidBodyError`, 400): an
    object with the fields of :class:`ferry.runtime.api.FeedbackItem` and no other (every unknown one named);
    pydantic's errors worded by :func:`ferry.runtime.api.validation_error`, as the predict routes word theirs."""
    if not isinstance(value, dict):
        raise InvalidBodyError(f"a label is an object with prediction_id and label, not {_json_type(value)}")
    accepted = list(FeedbackItem.model_fields)
    unknown = [name for name in value if name not in FeedbackItem.model_fields]
    if unknown:
        fields = "fields" if len(unknown) > 1 else "field"
        raise InvalidBodyError(f"unknown {fields} {', '.join(map(repr, unknown))}; accepted: {', '.join(accepted)}")
    try:
        return FeedbackItem.model_validate(value)
    except ValidationError as exc:
        raise InvalidBodyError(validation_error(exc.errors(), FeedbackItem).message) from None


@dataclass(frozen=True)
class Outcome:
    """A label accepted: written (ACCEPTED), there already (DUPLICATE) or written over another (CORRECTED)."""

    prediction_id: str
    model: str
    version: str
    label: str
    status: str

    def to_dict(self) -> dict[str, Any]:
        return {"prediction_id": self.prediction_id, "status": self.status, "duplicate": self.status == DUPLICATE}


@dataclass
class Tally:
    """Labels counted by model and outcome, for the EMF metrics of a request or a file."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (model, metric name) -> labels

    METRICS = ("FeedbackAccepted", "FeedbackDuplicates", "FeedbackRefused")

    def outcome(self, outcome: Outcome) -> None:
        self.counts[(outcome.model, "FeedbackDuplicates" if outcome.status == DUPLICATE else "FeedbackAccepted")] += 1

    def refused(self, model: str | None) -> None:
        self.counts[(model or UNKNOWN_MODEL, "FeedbackRefused")] += 1

    def emf_lines(self, namespace: str, epoch_ms: int | None = None) -> list[str]:
        """One EMF line per model with its three counts (zeros included, so that a series has no gaps where
        there were labels); none without labels. As ferry.runtime.emf says for captures: one line per model,
        since Powertools' Metrics has one set of dimensions a flush and a request may label several models."""
        stamp = int(time.time() * 1000) if epoch_ms is None else epoch_ms
        lines = []
        for model in sorted({model for model, _ in self.counts}):
            directive = {"Namespace": namespace, "Dimensions": [["model"]],
                         "Metrics": [{"Name": name, "Unit": "Count"} for name in self.METRICS]}
            line: dict[str, Any] = {"_aws": {"Timestamp": stamp, "CloudWatchMetrics": [directive]}, "model": model}
            line.update({name: self.counts[(model, name)] for name in self.METRICS})
            lines.append(json.dumps(line, separators=(",", ":")))
        return lines

    def print_emf(self, namespace: str) -> None:
        """Write :meth:`emf_lines` to standard output, where Lambda sends them to CloudWatch."""
        lines = self.emf_lines(namespace)
        if lines:
            sys.stdout.write("".join(line + "\n" for line in lines))
            sys.stdout.flush()


@dataclass(frozen=True)
class FeedbackAnswer:
    """What the API answers to a feedback body: the status, the JSON body, the labels counted; `error_code` is
    the code of a single label's refusal (the function counts it as the predict function counts errors)."""

    status: int
    body: dict[str, Any]
    tally: Tally
    error_code: str | None = None


def live_manifests(settings: Settings) -> Callable[[str], Manifest]:
    """The manifest of a model by name, as the predict function of the same layers serves it (the first folder
    of that name in the search path); :class:`ModelNotFoundError` when there is none. Read, never loaded."""
    return lambda name: Manifest.load(resolve_model_dir(name, settings.models_path))


class FeedbackService:
    """Records labels in the feedback table (`table()` makes it, once), checking ids with `ids` and labels
    against `manifest(name)`, the live manifest of a model (:func:`live_manifests`; each read once a container:
    layers do not change under a running function, and a model that cannot be read fails its own labels only).
    `clock` gives epoch seconds. `generation` names the stack's text-generation model (on its endpoint, no layer
    here), whose answers take no labels."""

    def __init__(self, table: Callable[[], Any], ids: PredictionIds, manifest: Callable[[str], Manifest], *,
                 ttl_days: int, clock: Callable[[], float] = time.time, backoff: Backoff = API_BACKOFF,
                 generation: str | None = None):
        self._table_factory, self.ids, self._manifest_of = table, ids, manifest
        self.ttl_days, self.clock, self.backoff = ttl_days, clock, backoff
        self.generation = generation
        self._table: Any = None
        self._manifests: dict[str, Manifest] = {}

    @classmethod
    def from_settings(cls, settings: Settings, table: Callable[[], Any]) -> FeedbackService:
        """The feedback function's: ids under the stack's secret, the models of its search path, the captures'
        time to live."""
        return cls(table, PredictionIds(settings.stack_secret), live_manifests(settings),
                   ttl_days=settings.capture_ttl_days, generation=settings.generate_model)

    @property
    def table(self) -> Any:
        if self._table is None:
            self._table = self._table_factory()
        return self._table

    def retrier(self, remaining_ms: int | None = None, backoff: Backoff | None = None) -> Retrier:
        """A retrier for one request (this service's backoff) or file (`backoff`): within the invocation's time
        when it is known."""
        backoff = backoff or self.backoff
        return Retrier(backoff) if remaining_ms is None else Retrier.within(remaining_ms, backoff)

    # -- the API ---------------------------------------------------------------------------------------------------

    def respond(self, body: Any, *, key_id: str | None, remaining_ms: int | None = None) -> FeedbackAnswer:
        """The answer to a feedback request's body (parsed JSON) sent with the API key `key_id`. An error of the
        whole request is raised: a body neither an object nor a list, an empty list, a list with an item that is
        not a label object (wrong types, unknown fields: 400), a list over MAX_FEEDBACK_ITEMS (413). The labels of
        a well-formed list are answered one by one (202 with 207 for the list, 400 invalid_label, 404, 409)."""
        tally, retrier = Tally(), self.retrier(remaining_ms)
        if isinstance(body, dict):
            result = self._one(body, key_id, SOURCE_API, retrier, tally)
            if isinstance(result, Outcome):
                return FeedbackAnswer(202, result.to_dict(), tally)
            return FeedbackAnswer(result.status, error_body(result.code, str(result)), tally, result.code)
        if not isinstance(body, list):
            raise InvalidBodyError(f"the body must be a label object or a list of 1 to {MAX_FEEDBACK_ITEMS}, not "
                                   f"{_json_type(body)}")
        if not body:
            raise InvalidBodyError(f"the body is an empty list: give 1 to {MAX_FEEDBACK_ITEMS} labels")
        if len(body) > MAX_FEEDBACK_ITEMS:
            raise PayloadTooLargeError(f"the body has {len(body)} labels; at most {MAX_FEEDBACK_ITEMS} are accepted "
                                       "per request: send the rest in another")
        items = []
        for index, value in enumerate(body):  # the shape first: a malformed item is the client's bug, not a label
            try:
                items.append(parse_item(value))
            except InvalidBodyError as error:
                raise InvalidBodyError(f"[{index}]: {error} (a list is refused whole when an item is not a label "
                                       "object; labels already recorded count once when it is sent again)") from None
        results = []
        for item in items:
            result = self._one(item, key_id, SOURCE_API, retrier, tally)
            entry: dict[str, Any] = {"prediction_id": item.prediction_id}
            if isinstance(result, Outcome):
                entry.update(status=202, outcome=result.status)
            else:
                entry.update(status=result.status, **error_body(result.code, str(result)))
            results.append(entry)
        refused = sum(1 for entry in results if entry["status"] != 202)
        return FeedbackAnswer(207 if refused else 202,
                              {"accepted": len(results) - refused, "refused": refused, "results": results}, tally)

    def _one(self, value: Any, key_id: str | None, source: str, retrier: Retrier,
             tally: Tally) -> Outcome | FerryRuntimeError:
        """One label (as sent, or checked already) recorded, or the error that refused it; counted either way."""
        model = None
        try:
            item = value if isinstance(value, FeedbackItem) else parse_item(value)
            model = self.ids.parse(item.prediction_id).model
            outcome = self.record(item, key_id=key_id, source=source, retrier=retrier)
        except FerryRuntimeError as error:
            tally.refused(model)
            return error
        tally.outcome(outcome)
        return outcome

    # -- recording -------------------------------------------------------------------------------------------------

    def record(self, item: FeedbackItem, *, key_id: str | None, source: str,
               retrier: Retrier | None = None) -> Outcome:
        """Check and write one label (see the module's account); the outcome, or the error that refuses it."""
        issued = self.ids.parse(item.prediction_id)
        labels = self._labels(issued, item.prediction_id)
        if item.label not in labels:
            raise InvalidLabelError(f"label {item.label!r} is not one of the labels of model {issued.model!r}: "
                                    f"{', '.join(labels)}")
        retrier = retrier or self.retrier()
        now_ms = int(self.clock() * 1000)
        stored = {
            "prediction_id": item.prediction_id, "model": issued.model, "version": issued.version,
            "model_version": issued.model_version, "label": item.label, "sampled": item.sampled,
            "epoch_ms": now_ms, "time": _iso(now_ms), "source": source,
            "expires_at": now_ms // 1000 + self.ttl_days * SECONDS_PER_DAY,
            **({"key_id": key_id} if key_id else {}), **({"text": item.text} if item.text else {}),
        }
        for _ in range(_SETTLE_TRIES):
            if self._write(functools.partial(self.table.put_item, Item=stored, ConditionExpression=_NEW_ONLY),
                           retrier, item.prediction_id):
                return self._outcome(issued, item, ACCEPTED)
            current = self._read(item.prediction_id, retrier)
            if current is not None:  # None: gone (its time to live) since the put: put it again
                return self._settle(issued, item, current, key_id, source, now_ms, retrier)
        raise FeedbackWriteError(f"prediction {item.prediction_id!r}: its label kept changing while this one was "
                                 "written; send it again")

    def _settle(self, issued: IssuedId, item: FeedbackItem, current: Mapping[str, Any], key_id: str | None,
                source: str, now_ms: int, retrier: Retrier) -> Outcome:
        """A label for a prediction that has one already: a duplicate, a conflict or a correction."""
        for _ in range(_SETTLE_TRIES):
            old = str(current.get("label"))
            condition = {"ConditionExpression": "#label = :old", "ExpressionAttributeNames": {"#label": "label"}}
            if old == item.label:
                if not item.sampled or current.get("sampled"):
                    return self._outcome(issued, item, DUPLICATE)
                mark = functools.partial(
                    self.table.update_item, Key={"prediction_id": item.prediction_id}, **condition,
                    UpdateExpression="SET sampled = :true", ExpressionAttributeValues={":old": old, ":true": True})
                if self._write(mark, retrier, item.prediction_id):
                    return self._outcome(issued, item, DUPLICATE)
            elif not item.correct:
                raise LabelConflictError(f"prediction {item.prediction_id!r} already has the label {old!r}; to "
                                         f"replace it with {item.label!r}, send the label with \"correct\": true")
            elif len(current.get("corrections") or ()) >= MAX_CORRECTIONS:
                raise LabelConflictError(f"prediction {item.prediction_id!r} has been corrected {MAX_CORRECTIONS} "
                                         f"times, the most kept; its label stays {old!r}")
            else:
                entry = {"previous_label": old, "label": item.label, "epoch_ms": now_ms, "time": _iso(now_ms),
                         "source": source, **({"key_id": key_id} if key_id else {})}
                correct = functools.partial(
                    self.table.update_item, Key={"prediction_id": item.prediction_id}, **condition,
                    UpdateExpression=("SET #label = :new, sampled = :sampled, corrected_at = :now, "
                                      "corrections = list_append(if_not_exists(corrections, :none), :entry)"),
                    ExpressionAttributeValues={":old": old, ":new": item.label, ":now": now_ms, ":none": [],
                                               ":sampled": bool(current.get("sampled")) or item.sampled,
                                               ":entry": [entry]})
                if self._write(correct, retrier, item.prediction_id):
                    return self._outcome(issued, item, CORRECTED)
            changed = self._read(item.prediction_id, retrier)  # changed since it was read: read it again
            if changed is None:  # gone (its time to live): rare enough to leave to the sender
                break
            current = changed
        raise FeedbackWriteError(f"prediction {item.prediction_id!r}: its label kept changing while this one was "
                                 "written; send it again")

    def _write(self, call: Callable[[], Any], retrier: Retrier, prediction_id: str) -> bool:
        """`call()` (a conditional write) under `retrier`: True when written, False when its condition failed."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            retrier(call)
        except (BotoCoreError, ClientError) as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise FeedbackWriteError(f"prediction {prediction_id!r}: the feedback table did not take the label "
                                     f"({error_code(exc)}); sending it again is safe") from None
        return True

    def _read(self, prediction_id: str, retrier: Retrier) -> dict[str, Any] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = retrier(functools.partial(self.table.get_item, Key={"prediction_id": prediction_id},
                                               ConsistentRead=True))
        except (BotoCoreError, ClientError) as exc:
            raise FeedbackWriteError(f"prediction {prediction_id!r}: the feedback table could not be read "
                                     f"({error_code(exc)}); sending the label again is safe") from None
        item = answer.get("Item")
        return dict(item) if item else None

    def _outcome(self, issued: IssuedId, item: FeedbackItem, status: str) -> Outcome:
        return Outcome(item.prediction_id, issued.model, issued.version, item.label, status)

    def _labels(self, issued: IssuedId, prediction_id: str) -> tuple[str, ...]:
        """The live labels of the id's model: refused when no model of that name is served, or it has none."""
        if issued.model == self.generation:
            raise UnsupportedTaskError(f"prediction {prediction_id!r} is of model {issued.model!r}, a "
                                       f"{TEXT_GENERATION} model: its answers have no labels")
        manifest = self._manifests.get(issued.model)
        if manifest is None:
            try:
                manifest = self._manifests[issued.model] = self._manifest_of(issued.model)
            except ModelNotFoundError as error:
                raise ModelNotFoundError(f"prediction {prediction_id!r} is of model {issued.model!r}, which is not "
                                         f"served here ({error})") from None
        if manifest.task != TEXT_CLASSIFICATION:
            raise UnsupportedTaskError(f"prediction {prediction_id!r} is of model {issued.model!r}, a "
                                       f"{manifest.task} model: its predictions have no labels")
        return manifest.labels


def _iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds")


# -- files of labels ----------------------------------------------------------------------------------------------

Row = tuple[int, FeedbackItem | FerryRuntimeError]


def read_label_file(body: bytes | BinaryIO, key: str, max_bytes: int = LABEL_LINE_BYTES) -> Iterator[Row]:
    """The labels of a file by its format (`key`'s suffix: .csv or .jsonl): ``(line, item)`` for each row that
    can be used and ``(line, error)`` for each that cannot, in file order; blank lines are no rows. A file that
    cannot be read at all (another format, a CSV header without prediction_id and label, or with a column that
    is none of these) raises :class:`LabelFileError`, when reading reaches it. `body` is the bytes or a stream
    (an S3 body: read a block at a time)."""
    suffix = PurePosixPath(key).suffix.lower()
    if suffix not in LABEL_FORMATS:
        raise LabelFileError(f"s3 key {key!r}: unknown format {suffix!r}; labels are .csv (prediction_id,label"
                             "[,sampled][,correct]) or .jsonl (one label object a line)")
    stream = io.BytesIO(body) if isinstance(body, bytes | bytearray) else body
    lines = Lines(stream, max_bytes)
    return _csv_rows(lines) if suffix == ".csv" else _jsonl_rows(lines)


def _jsonl_rows(lines: Lines) -> Iterator[Row]:
    for number, raw in lines:
        if raw is None:
            yield number, InvalidBodyError(f"the line is longer than {lines.max_bytes} bytes")
        elif raw.strip():
            yield number, _json_row(raw)


def _json_row(raw: bytes) -> FeedbackItem | FerryRuntimeError:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return InvalidBodyError(f"not valid UTF-8: byte {exc.start + 1} of the line is 0x{raw[exc.start]:02x}")
    try:
        value = json.loads(text)
    except RecursionError:
        return InvalidBodyError("not valid JSON: nested too deep")
    except ValueError as exc:
        return InvalidBodyError(f"not valid JSON: {exc}")
    return _checked(value)


def _checked(value: Any) -> FeedbackItem | FerryRuntimeError:
    try:
        return parse_item(value)
    except FerryRuntimeError as error:
        return error


def _csv_rows(lines: Lines) -> Iterator[Row]:
    """As :class:`ferry.runtime.batch.CsvRecords` reads records (its line source, which keeps a bad byte in its
    row and bounds a record's bytes), with the columns of a labels file."""
    columns: list[str] | None = None
    for start, row, problem in csv_rows(lines):
        if columns is None:
            columns = _label_header(start, row, problem)
            continue
        yield start, (InvalidBodyError(problem or "not valid CSV") if row is None else _csv_row(row, columns))


def _label_header(line: int, row: list[str] | None, problem: str | None) -> list[str]:
    if row is None or _ESCAPED_BYTE.search(",".join(row)):
        raise LabelFileError(f"the CSV header (line {line}) cannot be read: {problem or 'not valid UTF-8'}")
    columns = [name.strip() for name in row]
    expected = "the columns are prediction_id, label and optionally sampled, correct, text"
    missing = [name for name in _CSV_REQUIRED if name not in columns]
    unknown = [name for name in columns if name not in (*_CSV_REQUIRED, *_CSV_FLAGS, *_CSV_OPTIONAL)]
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    if missing or unknown or repeated:
        wrong = "; ".join(part for part in (
            missing and f"no {', '.join(missing)}", unknown and f"unknown {', '.join(map(repr, unknown))}",
            repeated and f"repeated {', '.join(repeated)}") if part)
        raise LabelFileError(f"the CSV header (line {line}) has {wrong}: {expected}")
    return columns


def _csv_row(row: list[str], columns: list[str]) -> FeedbackItem | FerryRuntimeError:
    if any(_ESCAPED_BYTE.search(cell) for cell in row):
        return InvalidBodyError("not valid UTF-8")
    if len(row) != len(columns):
        fields = "field" if len(row) == 1 else "fields"
        return InvalidBodyError(f"the row has {len(row)} {fields}; the header has {len(columns)} "
                                f"({', '.join(columns)})")
    value: dict[str, Any] = {}
    for name, cell in zip(columns, row, strict=True):
        if name in _CSV_FLAGS:
            flag = cell.strip().lower()
            if flag not in _TRUE | _FALSE:
                return InvalidBodyError(f"{name} is true or false (or 1, 0, yes, no, empty), not {cell!r}")
            value[name] = flag in _TRUE
        elif name in _CSV_OPTIONAL:
            if cell:
                value[name] = cell
        else:
            value[name] = cell.strip()
    return _checked(value)


@dataclass
class LabelFileResult:
    """What became of a file of labels: every row read is accepted (written, a duplicate or a correction) or
    rejected, ``rows == accepted + rejected``; the first MAX_REPORTED_ERRORS rejections with their lines. A file
    refused whole says why in `refused` (no row read); one stopped for want of time says where in
    `stopped_at_line` (the rows from there on were not read)."""

    key: str
    rows: int = 0
    accepted: int = 0
    duplicates: int = 0
    corrected: int = 0
    rejected: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    refused: str | None = None
    stopped_at_line: int | None = None
    tally: Tally = field(default_factory=Tally)

    def add(self, line: int, result: Outcome | FerryRuntimeError) -> None:
        self.rows += 1
        if isinstance(result, Outcome):
            self.accepted += 1
            self.duplicates += result.status == DUPLICATE
            self.corrected += result.status == CORRECTED
            return
        self.rejected += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({"line": line, "code": result.code, "message": str(result)})

    def report(self) -> dict[str, Any]:
        """The report object's content."""
        report: dict[str, Any] = {
            "key": self.key, "complete": self.refused is None and self.stopped_at_line is None, "rows": self.rows,
            "accepted": self.accepted, "duplicates": self.duplicates, "corrected": self.corrected,
            "rejected": self.rejected, "errors": self.errors,
            "errors_not_listed": self.rejected - len(self.errors)}
        if self.refused is not None:
            report["refused"] = self.refused
        if self.stopped_at_line is not None:
            report["stopped_at_line"] = self.stopped_at_line
            report["stopped"] = (f"out of time at line {self.stopped_at_line}: the lines from there on were not "
                                 "read; put a file with them under labels/ again (labels already given count once)")
        return report


def load_labels(body: bytes | BinaryIO, key: str, service: FeedbackService, *,
                remaining_ms: Callable[[], int] | None = None, margin_ms: int = LABELS_MARGIN_MS) -> LabelFileResult:
    """Record every label of the file `key` (its content `body`), each with the source ``bulk:<key>:<line>``
    and no API key; stops, saying where, when less than `margin_ms` of the function's time is left (checked
    before each row)."""
    result = LabelFileResult(key)
    retrier = service.retrier(remaining_ms() if remaining_ms else None, Backoff())  # the capture function's
    try:
        for line, row in read_label_file(body, key):
            if remaining_ms is not None and remaining_ms() < margin_ms:
                result.stopped_at_line = line
                break
            result.add(line, _recorded(service, row, key, line, retrier, result.tally))
    except LabelFileError as error:
        result.refused = str(error)
    return result


def _recorded(service: FeedbackService, row: FeedbackItem | FerryRuntimeError, key: str, line: int,
              retrier: Retrier, tally: Tally) -> Outcome | FerryRuntimeError:
    if isinstance(row, FerryRuntimeError):
        tally.refused(None)
        return row
    return service._one(row, None, f"bulk:{key}:{line}", retrier, tally)


def report_key(key: str) -> str:
    """Where the report of the labels file `key` goes: ``labels-report/<the name after labels/>.json``."""
    return f"{REPORTS_PREFIX}{key.removeprefix(LABELS_PREFIX)}.json"


def is_label_event(event: Mapping[str, Any]) -> bool:
    """Whether `event` is an S3 notification (the labels files), not an API Gateway request."""
    records = event.get("Records")
    return isinstance(records, list) and bool(records) and all(
        isinstance(record, dict) and record.get("eventSource") == "aws:s3" for record in records)


def handle_label_event(event: Mapping[str, Any], s3: Any, service: FeedbackService, *, logger: Log,
                       metrics: MetricSink, namespace: str,
                       remaining_ms: Callable[[], int] | None = None) -> dict[str, Any]:
    """What the feedback function does with an S3 notification of files under ``labels/``: each file's labels
    recorded (:func:`load_labels`), its report written beside (:func:`report_key`), its counts logged and
    published by model. An object outside ``labels/`` is passed over (logged, counted in LabelFileFailures): no
    retry can help. An S3 error reading the file or writing its report is raised, so that Lambda retries the
    event (labels already recorded then count once)."""
    summaries = []
    for record in event.get("Records") or []:
        s3_part = record.get("s3") or {}
        bucket = (s3_part.get("bucket") or {}).get("name")
        key = unquote_plus((s3_part.get("object") or {}).get("key", ""))
        if not bucket or not key.startswith(LABELS_PREFIX):
            logger.error("not a labels file", extra={"bucket": bucket, "key": key,
                                                     "reason": f"labels files go under {LABELS_PREFIX}"})
            add_count(metrics, "LabelFileFailures")
            continue
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        result = load_labels(body, key, service, remaining_ms=remaining_ms)
        report = result.report()
        s3.put_object(Bucket=bucket, Key=report_key(key), Body=json.dumps(report, indent=2).encode("utf-8"),
                      ContentType="application/json")
        result.tally.print_emf(namespace)
        summary = {name: report[name] for name in ("key", "complete", "rows", "accepted", "duplicates", "rejected")}
        summary["report"] = report_key(key)
        if not report["complete"]:
            add_count(metrics, "LabelFileFailures")
            logger.error("labels file not read to its end", extra={**summary, "why": report.get("refused")
                                                                   or report.get("stopped")})
        else:
            logger.info("labels file read", extra=summary)
        summaries.append(summary)
    return {"files": summaries}
