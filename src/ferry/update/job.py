"""The update's training job: the state machine's ``Train`` state, the ``train`` and ``build`` steps of
:class:`ferry.update.steps.Update` in one SageMaker training job.

SageMaker runs ``infra/update/entry.py`` in a PyTorch training container; the entry installs ferry and calls
:func:`main` with the job's hyperparameters as arguments (``--model sentiment --since_ms ... --min_rows 100 --arch
x86_64 --update_id ...``). What it reads and writes is SageMaker's training-job contract:

- ``SM_CHANNEL_EXAMPLES`` (``/opt/ml/input/data/examples``): the update's ``examples.jsonl`` (the assemble step's);
- ``SM_CHANNEL_LIVE``: the live version's fp32 model, a ``model.tar.gz`` whose ``model/`` folder holds the Hugging
  Face model with its ``training_report.json`` (a previous job's output, or the one ``make deploy`` uploads);
- ``SM_MODEL_DIR`` (``/opt/ml/model``), which SageMaker uploads as the job's ``model.tar.gz``: ``model/`` (the
  candidate's fp32 model: the next update warm-starts from it), ``layer.zip`` (the candidate's layer, as Lambda
  unpacks it under /opt), ``gate-data/reference.jsonl`` and ``gate-data/feedback.jsonl`` (the gate's rows, text and
  label, none of them trained on: :func:`ferry.update.steps.gate_slices`) and ``result.json`` (built or not and why,
  the version, its manifest, the training report, the parity figures, where each gate slice came from);
- a failure's message in ``/opt/ml/output/failure``, which SageMaker reports as the job's FailureReason.

The candidate trains as the local update trains it (:func:`ferry.update.steps.candidate_config`: the live model's
own recipe and data from its training report, warm-started from its weights, with the feedback mixed in) and is built
for the stack's architecture with the parity gate; a build the parity gate refuses is a job that succeeds with
``built: false`` (the gate step then rejects it), as the local update stops as rejected.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferry.update.exceptions import UpdateError

log = logging.getLogger("ferry.update.job")

# SageMaker's environment variables of a training job, and where they point in its containers
ENV_EXAMPLES = "SM_CHANNEL_EXAMPLES"
ENV_LIVE = "SM_CHANNEL_LIVE"
ENV_MODEL_DIR = "SM_MODEL_DIR"
ENV_OUTPUT_DIR = "SM_OUTPUT_DIR"
DEFAULT_MODEL_DIR = "/opt/ml/model"
DEFAULT_OUTPUT_DIR = "/opt/ml/output"
FAILURE_FILE = "failure"  # SageMaker reads the job's FailureReason from it (its first 1,024 characters)
MODEL_FOLDER, LAYER_ZIP, GATE_DATA, RESULT_FILE = "model", "layer.zip", "gate-data", "result.json"


@dataclass(frozen=True)
class JobPaths:
    examples: Path  # the examples file
    live: Path  # the live model's channel: a model.tar.gz, or a model folder
    out: Path  # what SageMaker uploads
    work: Path  # scratch: the unpacked live model, the built layer
    failure: Path | None = None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The job's hyperparameters (SageMaker passes each as ``--name value``, underscores kept) and, for a run
    outside SageMaker, where its inputs and outputs are."""
    parser = argparse.ArgumentParser(prog="ferry-update-job", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the model's name (its layer's models/<name>/)")
    parser.add_argument("--since-ms", "--since_ms", dest="since_ms", type=int, default=0,
                        help="when the trigger's episode began: the feedback since then is the gate's slice")
    parser.add_argument("--min-rows", "--min_rows", dest="min_rows", type=int, default=100,
                        help="the gate's min_rows: fewer recent held-out rows, and all held-out ones are used")
    parser.add_argument("--arch", default="x86_64", choices=("x86_64", "arm64"), help="the stack's Architecture")
    parser.add_argument("--update-id", "--update_id", dest="update_id", default="", help="the update (recorded)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: UpdateConfig's)")
    parser.add_argument("--max-minutes", "--max_minutes", dest="max_minutes", type=float, default=None,
                        help="a training budget; fewer steps are planned to keep it")
    parser.add_argument("--examples", type=Path, default=None, help=f"the examples (default: ${ENV_EXAMPLES})")
    parser.add_argument("--live", type=Path, default=None, help=f"the live fp32 model (default: ${ENV_LIVE})")
    parser.add_argument("--out", type=Path, default=None, help=f"the job's output (default: ${ENV_MODEL_DIR})")
    parser.add_argument("--work", type=Path, default=None, help="scratch space (default: a new temporary folder)")
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # SageMaker may pass hyperparameters of its own; they are not this job's
        log.info("ignoring arguments %s", unknown)
    return args


def paths(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> JobPaths:
    """Where the job reads and writes: arguments first, then SageMaker's variables."""
    env = os.environ if env is None else env
    examples_channel = args.examples or _from_env(env, ENV_EXAMPLES, "--examples")
    live = args.live or _from_env(env, ENV_LIVE, "--live")
    out = args.out or Path(env.get(ENV_MODEL_DIR, DEFAULT_MODEL_DIR))
    work = args.work or Path(tempfile.mkdtemp(prefix="ferry-update-job-"))
    output_dir = env.get(ENV_OUTPUT_DIR) or (DEFAULT_OUTPUT_DIR if ENV_MODEL_DIR in env else "")
    return JobPaths(examples=examples_file(examples_channel), live=live, out=out, work=work,
                    failure=Path(output_dir) / FAILURE_FILE if output_dir else None)


def _from_env(env: Mapping[str, str], name: str, option: str) -> Path:
    value = env.get(name)
    if not value:
        raise UpdateError(f"{name} is not set (SageMaker sets it for the job's channel); outside SageMaker give "
                          f"{option}")
    return Path(value)


def examples_file(channel: Path) -> Path:
    """The examples file of the channel: the path itself, or the one JSONL file in the folder."""
    if channel.is_file():
        return channel
    found = sorted(channel.glob("*.jsonl")) if channel.is_dir() else []
    if len(found) != 1:
        raise UpdateError(f"{channel}: expected one examples JSONL file, found {len(found)}")
    return found[0]


def live_model(channel: Path, work: Path) -> Path:
    """The live fp32 model folder (config.json and training_report.json): the channel's folder itself, or unpacked
    from the model.tar.gz in it (a previous job's output, whose ``model/`` holds it)."""
    from ferry.train.report import TRAINING_REPORT_FILE

    archives = [channel] if channel.is_file() else sorted(channel.glob("*.tar.gz")) if channel.is_dir() else []
    root = channel
    if archives:
        root = work / "live"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        with tarfile.open(archives[0], "r:gz") as archive:
            archive.extractall(root, filter="data")  # refuses members outside root, links out of it, devices
    for folder in (root / MODEL_FOLDER, root):
        if (folder / "config.json").is_file() and (folder / TRAINING_REPORT_FILE).is_file():
            return folder
    raise UpdateError(f"{channel}: no model folder with config.json and {TRAINING_REPORT_FILE} (in {MODEL_FOLDER}/ or "
                      "at the top): the live version's fp32 model is what the candidate warm-starts from")


# The two heavy steps, looked up when called (tests replace them)
def train_candidate(config: Any) -> Any:
    from ferry.train import train

    return train(config, progress=log.info)


def build_candidate(config: Any) -> Any:
    from ferry.layer import build_layer

    return build_layer(config, progress=log.info)


def run(args: argparse.Namespace, job: JobPaths) -> dict[str, Any]:
    """Train the candidate, build its layer, write the gate's rows and the result; the result."""
    from ferry.layer import BuildConfig
    from ferry.layer.exceptions import GateFailedError
    from ferry.train import PREDICTIONS_DIR, TrainingReport
    from ferry.update.config import UpdateConfig
    from ferry.update.steps import candidate_config

    base = live_model(job.live, job.work)
    config = UpdateConfig(**({"steps": args.steps} if args.steps else {}), max_minutes=args.max_minutes)
    model = job.out / MODEL_FOLDER
    if model.exists():  # a job restarted on the same instance: train again from the start
        shutil.rmtree(model)
    train_candidate(candidate_config(TrainingReport.load(base).config, base=base, out=model,
                                     feedback=job.examples, config=config))
    trained = TrainingReport.load(model)
    result: dict[str, Any] = {"model": args.model, "update_id": args.update_id, "since_ms": args.since_ms,
                              "training": trained.to_dict()}
    predictions = model / PREDICTIONS_DIR
    try:
        built = build_candidate(BuildConfig(
            model=str(model), task="text-classification", name=args.model, out=job.work / "layers", arch=args.arch,
            eval_data=predictions / "test.jsonl", reference_data=predictions / "validation.jsonl"))
    except GateFailedError as exc:  # int8 strays from fp32: not a candidate at all
        why = f"the parity gate refused the int8 candidate: {exc}"
        return _write_result(job, {**result, "built": False, "why": why})
    zip_layer(built.layer_dir, job.out / LAYER_ZIP)
    sources = write_gate_data(model, job, args)
    parity = built.parity.to_dict()
    return _write_result(job, {**result, "built": True, "version": built.version, "manifest": built.manifest.to_dict(),
                               "parity": {key: parity.get(key) for key in ("passed", "accuracy_fp32", "accuracy_int8",
                                                                           "agreement", "texts")},
                               "slice_sources": sources})


def write_gate_data(model: Path, job: JobPaths, args: argparse.Namespace) -> dict[str, str]:
    """The gate's slices as ``gate-data/<slice>.jsonl`` (text, label); where each came from."""
    from ferry.update.steps import gate_slices

    folder = job.out / GATE_DATA
    folder.mkdir(parents=True, exist_ok=True)
    sources: dict[str, str] = {}
    for name, (rows, note) in gate_slices(model, job.examples, args.since_ms, args.min_rows).items():
        with (folder / f"{name}.jsonl").open("w", encoding="utf-8") as out:
            for text, label in rows:
                out.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")
        sources[name] = f"{note} ({len(rows)} rows)"
    return sources


def zip_layer(layer: Path, target: Path) -> Path:
    """A layer folder as the zip Lambda unpacks under /opt (its ``models/<name>/`` at the zip's top)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(layer.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(layer).as_posix())
    return target


def _write_result(job: JobPaths, result: dict[str, Any]) -> dict[str, Any]:
    job.out.mkdir(parents=True, exist_ok=True)
    (job.out / RESULT_FILE).write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    return result


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None,
         runner: Callable[[argparse.Namespace, JobPaths], dict[str, Any]] = run) -> int:
    """The job: 0 when it produced a result (built or refused by the parity gate); an error raises after its
    message is written where SageMaker reports it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    env = os.environ if env is None else env
    args = parse_args(argv)
    job = paths(args, env)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every model is local: never reach for the hub
    try:
        result = runner(args, job)
    except Exception as exc:
        if job.failure is not None:
            job.failure.parent.mkdir(parents=True, exist_ok=True)
            job.failure.write_text(f"{type(exc).__name__}: {exc}"[:1024], encoding="utf-8")
        raise
    log.info("candidate %s: %s", result.get("version"), "built" if result.get("built") else result.get("why"))
    return 0


__all__ = ["JobPaths", "build_candidate", "examples_file", "live_model", "main", "parse_args", "paths", "run",
           "train_candidate", "write_gate_data", "zip_layer"]
