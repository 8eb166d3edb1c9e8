"""An update, step by step: assemble -> train -> build -> gate -> register -> promote.

The same steps, in the same order, as the state machine of template.yaml (``UpdateStateMachine``); locally they
run in-process (:class:`Update`) against the embedded AWS, and each one's result is checkpointed in the registry
(``update#<id>``) as it completes, so that an update killed midway is finished by a rerun, which skips the steps
done. One update per model at a time: the registry's lock, held with a lease renewed while the update runs, so
that a killed update blocks the next one for one lease at most. A trigger that finds an update running is
recorded and not started.

- **assemble**: the model's labelled feedback with its texts (:mod:`ferry.runtime.examples`), copied into the
  update's folder. Too few examples since the trigger (``min_labels``) or of one label (``min_per_label``): the
  update waits (outcome ``waiting``); no example at all: nothing to learn from (``skipped``).
- **train**: from the live model's fp32 weights (warm start), on a replay of its own training data (the same
  data and filters its training report records) plus the feedback's train split, class-balanced
  (:class:`ferry.train.TrainConfig`'s ``feedback_data``); the feedback's other splits are never trained on.
- **build**: ``ferry build`` of the candidate, with its parity gate (int8 against fp32).
- **gate**: the live and the candidate int8 models on the same rows of each slice: ``reference`` (the data's
  test split) and ``feedback`` (the held-out feedback since the trigger), judged by :mod:`ferry.runtime.gate`.
- **register**: the candidate, its manifest, training report and gate result, blessed or rejected.
- **promote**: a blessed candidate takes ``canary_weight`` of the traffic, judged against the incumbent
  (:mod:`ferry.runtime.canary`) until ``canary_seconds`` have passed; then live, or rolled back at the first
  alarm. A rejected candidate leaves the live model untouched and is announced (``ModelUpdateRejected``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ferry.runtime import layout
from ferry.runtime.canary import Traffic
from ferry.runtime.constants import TEXT_CLASSIFICATION
from ferry.runtime.examples import ExampleSet, labelled_examples, read_examples_file, too_few, write_examples
from ferry.runtime.gate import DEFAULT_GATE, GateConfig, evaluate
from ferry.runtime.manifest import Manifest
from ferry.runtime.registry import Entry, Registry
from ferry.runtime.update_task import paired
from ferry.update.config import UpdateConfig
from ferry.update.exceptions import UpdateError
from ferry.update.promotion import artifact_path

STEPS = ("assemble", "train", "build", "gate", "register", "promote")
# an update's outcome: done (a new version live), rejected (by the gate), rolled-back (by the canary), waiting (too
# few labels yet), skipped (nothing to learn from, or another update is running)
DONE, REJECTED, ROLLED_BACK, WAITING, SKIPPED = "done", "rejected", "rolled-back", "waiting", "skipped"
EVENT_SOURCE = "ferry.update"
PROJECT_GATE = Path("gate.json")

Progress = Callable[[str], None]


def _silent(_: str) -> None:
    return None


@dataclass(frozen=True)
class Trigger:
    """What started an update: an event (its id, so a redelivery runs nothing twice) and the time its episode
    began (the labels since then are the recent feedback), or a person."""

    by: str
    event_id: str | None = None
    since_ms: int = 0


@dataclass
class Outcome:
    state: str
    update_id: str
    why: str
    version: str | None = None  # the candidate's, once built
    results: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "update_id": self.update_id, "why": self.why, "version": self.version,
                "results": self.results}


class Target(Protocol):
    """Where versions are served: the local stack, or the AWS stack's parameters (a CloudFormation update)."""

    def deployed(self, model: str) -> Path:
        """The layer folder of the version serving `model` now."""

    def start_canary(self, model: str, layer: Path, weight: float) -> None: ...

    def traffic(self) -> dict[str, Traffic]:
        """The canary's and the incumbent's traffic since the canary started ("primary", "canary")."""

    def stop_canary(self, model: str) -> None: ...

    def go_live(self, model: str, layer: Path) -> None:
        """Serve `layer` as `model`'s only version (idempotent: serving it already changes nothing)."""

    def notify(self, detail_type: str, detail: Mapping[str, Any]) -> None: ...


@dataclass
class Tables:
    """The update's DynamoDB tables (boto3 Table resources)."""

    registry: Any
    feedback: Any
    captures: Any


class Update:
    """One model's update over `tables` and `target`, with `config`'s settings."""

    def __init__(self, model: str, tables: Tables, target: Target, config: UpdateConfig | None = None, *,
                 progress: Progress = _silent, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep):
        self.model = model
        self.tables = tables
        self.registry = Registry(tables.registry, clock=clock)
        self.target = target
        self.config = config or UpdateConfig()
        self.progress = progress
        self.clock = clock
        self.sleep = sleep
        self.gate = _gate_config(self.config.gate)

    # -- the run ----------------------------------------------------------------------------------------------

    def run(self, trigger: Trigger, update_id: str | None = None) -> Outcome:
        """Run (or resume) an update; returns its outcome. With `update_id` None, the update left unfinished by
        a killed run is resumed, else a new one starts."""
        running = self.registry.running_update(self.model)
        update_id = update_id or (running.update_id if running is not None else _new_id(self.clock()))
        # one owner per run, never re-entrant: a second run of the same update (in this process or another) waits
        # for the first to end, or for its lease to expire when it was killed
        owner = f"{update_id}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        lease = self.registry.acquire(self.model, owner, self.config.lease_seconds, what=f"update {update_id}")
        if lease is None:
            holder = self.registry.lock_holder(self.model) or {}
            why = f"an update is running ({holder.get('what', 'unknown')}); this trigger is recorded, not started"
            self._record_trigger(trigger, SKIPPED, why, None)
            self.progress(why)
            return Outcome(SKIPPED, update_id, why)
        heartbeat = _Heartbeat(lease, self.config.lease_seconds)
        try:
            outcome = self._steps(update_id, trigger)
        except Exception as exc:  # an error: recorded; a kill (a signal, KeyboardInterrupt) leaves it to resume
            self.registry.finish_update(self.model, update_id, "failed", error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            heartbeat.stop()
            lease.release()
        final = "running" if outcome.state == WAITING else outcome.state
        if final != "running":
            self.registry.finish_update(self.model, update_id, final)
        self._record_trigger(trigger, "started", outcome.why, update_id)
        return outcome

    def _record_trigger(self, trigger: Trigger, outcome: str, detail: str, update_id: str | None) -> None:
        if trigger.event_id is not None:
            self.registry.record_event(self.model, trigger.event_id, outcome=outcome, detail=detail,
                                       update_id=update_id)

    def _steps(self, update_id: str, trigger: Trigger) -> Outcome:
        record = self.registry.start_update(self.model, update_id, by=trigger.by)
        results: dict[str, Any] = dict(record.steps)
        outcome = Outcome("running", update_id, "", results=results)
        work = self.config.work / self.model / update_id
        for step in STEPS:
            if step in results:
                self.progress(f"{step}: done before ({brief(results[step])})")
                stop = results[step].get("stop")
            else:
                started = time.perf_counter()
                self.progress(f"{step} ...")
                result = getattr(self, f"_{step}")(work, trigger, results)
                result["seconds"] = round(time.perf_counter() - started, 1)
                stop = result.get("stop")
                if stop != WAITING:  # a waiting assemble is done again next time, with the labels since
                    self.registry.record_step(self.model, update_id, step, result)
                results[step] = result
                self.progress(f"{step}: {brief(result)}")
            if "version" in results[step]:
                outcome.version = results[step]["version"]
            if stop:
                outcome.state, outcome.why = stop, results[step].get("why", stop)
                return outcome
        outcome.state, outcome.why = DONE, results["promote"].get("why", "live")
        return outcome

    # -- the steps --------------------------------------------------------------------------------------------

    def _live(self) -> Entry:
        """The live version, registered from what is deployed when the registry does not know it yet."""
        live = self.registry.live(self.model)
        if live is not None:
            return live
        layer = self.target.deployed(self.model)
        manifest = Manifest.load(layout.model_dir_in_layer(layer, self.model))
        artifacts = self._keep(manifest.version, {"layer": layer, "model": _fp32_source(manifest)})
        return self.registry.adopt(manifest.to_dict(), artifacts, by="ferry update",
                                   why="the version deployed when the first update ran")

    def _keep(self, version: str, sources: Mapping[str, Path | None]) -> dict[str, str]:
        """Copy a version's files into the store (its layer, its fp32 model to warm-start from, its training set):
        the registry's artifacts outlive the update's folder and the layers folder. By name, their file: URIs."""
        folder = self.config.store / self.model / version
        kept: dict[str, str] = {}
        for name, source in sources.items():
            if source is None:
                continue
            target = folder / (name if source.is_dir() else source.name)
            if not target.exists():
                folder.mkdir(parents=True, exist_ok=True)
                staging = folder / f".{target.name}-{uuid.uuid4().hex[:8]}"
                (shutil.copytree if source.is_dir() else shutil.copyfile)(source, staging)
                staging.replace(target)
            kept[name] = target.resolve().as_uri()
        return kept

    def _assemble(self, work: Path, trigger: Trigger, results: dict[str, Any]) -> dict[str, Any]:
        live = self._live()
        task = live.manifest.get("task")
        if task != TEXT_CLASSIFICATION:
            return {"stop": SKIPPED, "live_version": live.version,
                    "why": f"{self.model} is a {task} model: an embedding model cannot be retrained from labels; "
                           "updates are for text classifiers"}
        versions = [entry.version for entry in self.registry.versions(self.model)]
        found = labelled_examples(self.tables.feedback, self.tables.captures, self.model, versions)
        labels = tuple(live.manifest.get("labels") or ())
        summary = found.summary()
        recent = [example for example in found.examples if example.epoch_ms > trigger.since_ms]
        summary["recent"] = len(recent)
        why = _too_few(found, recent, labels, self.config)
        if why is not None:
            state = SKIPPED if not found.examples else WAITING
            return {"stop": state, "why": why, **summary, "live_version": live.version}
        path = write_examples(found.examples, work / "examples.jsonl")
        return {**summary, "examples_file": str(path), "live_version": live.version, "since_ms": trigger.since_ms}

    def _train(self, work: Path, trigger: Trigger, results: dict[str, Any]) -> dict[str, Any]:
        from ferry.train import TrainingReport, train
        from ferry.train.report import report_path

        live = self._entry(results["assemble"]["live_version"])
        base = artifact_path(live.artifacts.get("model"))
        if base is None or not (base / "config.json").is_file():
            raise UpdateError(f"{self.model} {live.version}: the registry keeps no fp32 model to warm-start from "
                              "(a version built from a hub model or before the registry); train it with ferry "
                              "train and ferry build, then ferry promote it")
        out = work / "model"
        if not report_path(out).is_file():  # a rerun after a kill once the model was written trains nothing again
            train(candidate_config(TrainingReport.load(base).config, base=base, out=out,
                                   feedback=Path(results["assemble"]["examples_file"]), config=self.config),
                  progress=self.progress)
        report = TrainingReport.load(out)
        return {"model": str(out), "steps": report.steps, "wall_seconds": report.wall_seconds,
                "splits": {name: {"accuracy": round(m.accuracy, 4), "macro_f1": round(m.macro_f1, 4)}
                           for name, m in report.splits.items()}}

    def _build(self, work: Path, trigger: Trigger, results: dict[str, Any]) -> dict[str, Any]:
        from ferry.layer import BuildConfig, GateThresholds, build_layer
        from ferry.layer.exceptions import GateFailedError
        from ferry.train import PREDICTIONS_DIR

        model = Path(results["train"]["model"])
        try:
            built = build_layer(BuildConfig(
                model=str(model), task="text-classification", name=self.model, out=work / "layers",
                eval_data=model / PREDICTIONS_DIR / "test.jsonl",
                reference_data=model / PREDICTIONS_DIR / "validation.jsonl",
                gate=GateThresholds(**self.config.parity),
            ), progress=self.progress)
        except GateFailedError as exc:  # int8 strays from fp32: not a candidate at all
            return {"stop": REJECTED, "why": f"the parity gate refused the int8 candidate: {exc}"}
        artifacts = self._keep(built.version, {"layer": built.layer_dir, "model": model,
                                               "examples": Path(results["assemble"]["examples_file"])})
        parity = built.parity.to_dict()
        return {"version": built.version, "layer": str(artifact_path(artifacts["layer"])), "artifacts": artifacts,
                "parity": {key: parity.get(key) for key in ("passed", "accuracy_fp32", "accuracy_int8",
                                                            "agreement", "texts")}}

    def _gate(self, work: Path, trigger: Trigger, results: dict[str, Any]) -> dict[str, Any]:
        from ferry.runtime.predictor import Predictor

        live = self._entry(results["assemble"]["live_version"])
        live_layer = artifact_path(live.artifacts.get("layer")) or self.target.deployed(self.model)
        live_model = Predictor.load(layout.model_dir_in_layer(live_layer, self.model))
        candidate = Predictor.load(layout.model_dir_in_layer(Path(results["build"]["layer"]), self.model))
        slices = gate_slices(Path(results["train"]["model"]), Path(results["assemble"]["examples_file"]),
                             results["assemble"]["since_ms"], self.gate.min_rows)
        data = {name: paired(name, rows, live_model, candidate) for name, (rows, _) in slices.items()}
        result = evaluate(self.gate, data)
        summary = result.to_dict()
        summary["slice_sources"] = {name: note for name, (_, note) in slices.items()}
        (work / "gate.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
        self.progress("gate:\n" + result.summary())
        return {"passed": result.passed, "result": summary, "summary": result.summary()}

    def _register(self, work: Path, trigger: Trigger, results: dict[str, Any]) -> dict[str, Any]:
        from ferry.train import TrainingReport

        built, gated = results["build"], results["gate"]
        layer = Path(built["layer"])
        manifest = Manifest.load(layout.model_dir_in_layer(layer, self.model))
        report = TrainingReport.load(Path(results["train"]["model"]))
        self.registry.register(manifest.to_dict(), built["artifacts"], by=trigger.by,
                               why=f"trained on {results['assemble']['examples']} feedback examples",
                               training=report.to_dict())
        entry = self.registry.get(self.model, built["version"])
        if entry is not None and entry.status == "candidate":
            entry = self.registry.record_gate(self.model, built["version"], {**gated["result"],
                                                                             "summary": gated["summary"]},
                                              passed=bool(gated["passed"]), by="gate")
        status = entry.status if entry is not None else "unknown"
        if not gated["passed"]:
            self.target.notify("ModelUpdateRejected", {"model": self.model, "version": built["version"],
                                                       "live_version": results["assemble"]["live_version"],
                                                       "gate": gated["summary"]})
            return {"stop": REJECTED, "why": "the gate rejected the candidate; the live model is unchanged",
                    "status": status, "version": built["version"]}
        return {"status": status, "version": built["version"]}

    def _promote(self, work: Path, trigger: Trigger, results: dict[str, Any]) -> dict[str, Any]:
        from ferry.update.promotion import Promotions

        entry = self._entry(results["build"]["version"])
        if entry.status == "rolled-back":  # killed after the canary was rolled back: finish that
            self.target.stop_canary(self.model)
            return {"stop": ROLLED_BACK, "why": f"{entry.version} was rolled back", "version": entry.version}
        return Promotions(self).canary_then_live(entry, by="update", why="blessed by the gate")

    def _entry(self, version: str) -> Entry:
        entry = self.registry.get(self.model, version)
        if entry is None:
            raise UpdateError(f"{self.model} {version}: not in the registry")
        return entry


# -- helpers ------------------------------------------------------------------------------------------------------


class _Heartbeat:
    """Renews a lease every third of its length until stopped (a killed process stops renewing)."""

    def __init__(self, lease: Any, seconds: float):
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(lease, seconds), name="ferry-update-lease",
                                        daemon=True)
        self._thread.start()

    def _run(self, lease: Any, seconds: float) -> None:
        while not self._stopped.wait(seconds / 3):
            lease.renew(seconds)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)


def _new_id(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + "-" + uuid.uuid4().hex[:6]


def candidate_config(original: Mapping[str, Any], *, base: Path, out: Path, feedback: Path,
                     config: UpdateConfig) -> Any:
    """The candidate's training: the live model's own (its data, filters, lengths and evaluation caps, from its
    training report) from its weights, with the update's feedback, steps, learning rate and the last checkpoint."""
    import dataclasses

    from ferry.train import TrainConfig

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    kept = {key: tuple(value) if isinstance(value, list) else value for key, value in original.items()
            if key in known and key not in ("base", "out", "max_minutes", "seed", "threads")}
    return TrainConfig(**{**kept, "base": str(base), "out": out, "feedback_data": str(feedback),
                          "feedback_share": config.feedback_share, "replay_texts": config.replay_texts,
                          "steps": config.steps, "learning_rate": config.learning_rate,
                          "warmup_steps": config.warmup_steps, "max_minutes": config.max_minutes,
                          "seed": config.seed, "select": "last", "validations": 2})


def _gate_config(path: Path | None) -> GateConfig:
    if path is not None:
        return GateConfig.load(path)
    return GateConfig.load(PROJECT_GATE) if PROJECT_GATE.is_file() else DEFAULT_GATE


def _fp32_source(manifest: Manifest) -> Path | None:
    """The fp32 folder a layer was built from, when the build's source was a local folder still there."""
    source = Path(str(manifest.source.get("model", "")))
    return source if (source / "config.json").is_file() else None


def _too_few(found: ExampleSet, recent: Sequence[Any], labels: Sequence[str], config: UpdateConfig) -> str | None:
    return too_few(found, recent, labels, config.min_labels, config.min_per_label)


def gate_slices(trained: Path, examples: Path, since_ms: int, min_rows: int
                ) -> dict[str, tuple[list[tuple[str, str]], str]]:
    """The gate's rows, none of them trained on: ``reference``, the data's test split (what the trainer wrote);
    ``feedback``, the examples in the held-out splits labelled since `since_ms` (all held-out ones when those are
    fewer than `min_rows`)."""
    from ferry.data.dataset import normalize_text, split_of
    from ferry.data.readers import read_examples
    from ferry.train import PREDICTIONS_DIR

    reference = [(e.text, str(e.label)) for e in read_examples(trained / PREDICTIONS_DIR / "test.jsonl")]
    held_out = [e for e in read_examples_file(examples) if split_of(normalize_text(e.text)) != "train"]
    recent = [e for e in held_out if e.epoch_ms > since_ms]
    rows, note = recent, f"held-out feedback since {since_ms}"
    if len(recent) < min_rows:
        rows, note = held_out, f"all held-out feedback ({len(recent)} since the trigger: too few)"
    unique = {normalize_text(e.text): (e.text, e.label) for e in rows}  # a text labelled twice counts once
    return {"reference": (reference, "the data's test split"), "feedback": (list(unique.values()), note)}


def brief(result: Mapping[str, Any]) -> str:
    if "why" in result:
        return str(result["why"])
    keys = ("version", "examples", "recent", "passed", "status", "model", "seconds")
    return ", ".join(f"{key} {result[key]}" for key in keys if key in result)


