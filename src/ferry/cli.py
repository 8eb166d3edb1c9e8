"""`ferry`: a thin command line over the library. Each command parses, delegates and reports.

Exit codes: 0 success, 1 the work failed (a gate, a size limit, a model that does not load), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_FAILED = 1
EXIT_USAGE = 2
DEFAULT_LAYERS_DIR = Path("layers/model")


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    sys.stderr.write(f"ferry: error: {message}\n")
    return code


def _progress(message: str) -> None:
    sys.stderr.write(f"ferry: {message}...\n")
    sys.stderr.flush()


# --- ferry build ---------------------------------------------------------------------------------------------


def _add_build(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ferry.runtime.constants import TASKS

    build = commands.add_parser(
        "build",
        help="export a Hugging Face model to int8 ONNX, gate it against the original, package it as a layer",
        description="Export a Hugging Face model to ONNX with Optimum, quantize it to int8, check it against "
        "the fp32 original (the parity gate) and write a Lambda layer folder OUT/NAME/.",
    )
    build.add_argument("--model", required=True, help="a local model folder, or a hub id available offline")
    build.add_argument("--task", required=True, choices=TASKS)
    build.add_argument("--name", help="the model's name (default: from --model)")
    build.add_argument("--arch", default="x86_64", choices=("x86_64", "arm64"), help="Lambda architecture")
    build.add_argument("--out", type=Path, default=DEFAULT_LAYERS_DIR, help="folder of layers (default %(default)s)")
    build.add_argument("--eval-data", type=Path, help="CSV/JSONL/TXT of texts (and labels) for the parity gate")
    build.add_argument("--text-column", default="text")
    build.add_argument("--label-column", default="label")
    build.add_argument("--max-length", type=int, help="tokens per text (default: the model's own pipeline)")
    build.add_argument("--max-accuracy-drop", type=float, default=0.5, help="percentage points (default 0.5)")
    build.add_argument("--min-agreement", type=float, default=0.98, help="label agreement (default 0.98)")
    build.add_argument("--min-cosine", type=float, default=0.95, help="worst embedding cosine (default 0.95)")
    build.add_argument("--runtime-layer", type=Path, help="a built runtime layer folder, for the size check")
    build.set_defaults(run=_run_build)


def _run_build(args: argparse.Namespace) -> int:
    from ferry.layer import BuildConfig, BuildError, GateThresholds, InvalidBuildConfigError, build_layer

    try:
        config = BuildConfig(
            model=args.model,
            task=args.task,
            out=args.out,
            name=args.name,
            arch=args.arch,
            eval_data=args.eval_data,
            text_column=args.text_column,
            label_column=args.label_column,
            max_length=args.max_length,
            gate=GateThresholds(args.max_accuracy_drop, args.min_agreement, args.min_cosine),
            runtime_layer=args.runtime_layer,
        )
        result = build_layer(config, progress=_progress)
    except InvalidBuildConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except BuildError as exc:
        return _fail(str(exc))
    print(format_build_summary(result))
    return 0


def format_build_summary(result: Any) -> str:
    mb = 1e6
    parity = result.parity.to_dict()
    if result.parity.task == "text-classification":
        figures = f"label agreement {parity['agreement']:.4f}, max |logit diff| {parity['max_abs_logit_diff']:.4f}"
        if parity["accuracy_fp32"] is not None:
            figures += (f", accuracy fp32 {parity['accuracy_fp32']:.4f} -> int8 {parity['accuracy_int8']:.4f} "
                        f"({-parity['accuracy_drop_points']:+.2f} points)")
    else:
        figures = f"cosine to fp32 min {parity['min_cosine']:.4f}, mean {parity['mean_cosine']:.4f}"
    load = result.load
    budget = "\n".join(f"  {'':11}{part.bytes / mb:7.1f} MB  {part.what}" for part in result.size_parts)
    rows = [
        f"built {result.name} {result.version} ({result.manifest['task']}, {result.manifest['arch']}) "
        f"-> {result.layer_dir}",
        f"  {'size':11}fp32 {result.fp32_bytes / mb:.1f} MB -> int8 {result.int8_bytes / mb:.1f} MB "
        f"({result.int8_bytes / result.fp32_bytes:.1%})",
        f"  {'parity':11}{figures} on {parity['texts']} texts: PASS",
        f"  {'load':11}fresh process: import {load['import_s']:.2f} s + load {load['load_s']:.2f} s = "
        f"{load['import_and_load_s']:.2f} s; first prediction {load['first_prediction_s'] * 1000:.0f} ms",
        f"  {'lambda':11}{result.function_bytes / mb:.1f} MB of 262.1 MB unzipped:",
        budget,
        f"  {'steps':11}" + ", ".join(f"{step} {secs:.1f} s" for step, secs in result.seconds.items()),
    ]
    return "\n".join(rows)


# --- ferry train ----------------------------------------------------------------------------------------------


def _add_train(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    train = commands.add_parser(
        "train",
        help="fine-tune a Hugging Face encoder as a text classifier (CPU, torch)",
        description="Fine-tune --base on labelled texts and write a Hugging Face model folder with a training "
        "report. --data default is the bundled tweets (negative/positive; --neutral adds the third class).",
    )
    train.add_argument("--base", required=True, help="a local model folder, or a packaged hub id")
    train.add_argument("--data", required=True, help="'default' or a CSV/JSONL file of texts and labels")
    train.add_argument("--out", type=Path, required=True, help="the model folder to write")
    train.add_argument("--neutral", action="store_true", help="bundled tweets: three classes")
    train.add_argument("--labels", help="comma-separated labels of a user file, in class order")
    train.add_argument("--text-column", default="text")
    train.add_argument("--label-column", default="label")
    train.add_argument("--steps", type=int, default=880)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--learning-rate", type=float, default=1e-4)
    train.add_argument("--max-length", type=int, default=64)
    train.add_argument("--max-minutes", type=float, help="wall-clock budget, final evaluation included")
    train.add_argument("--max-train-texts", type=int, help="train on a slice (quick runs)")
    train.add_argument("--max-eval-texts", type=int, help="evaluate on a slice (quick runs)")
    train.add_argument("--min-confidence", type=float, default=0.6,
                       help="drop training rows whose confidence is below it (default 0.6; rows without one stay)")
    train.add_argument("--frozen-layers", type=int, default=2, help="lowest encoder layers kept as pre-trained")
    train.add_argument("--sampling", choices=("natural", "balanced"), default="natural",
                       help="shuffled epochs, or classes drawn uniformly (then the prior is corrected at the end)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--warn-below", type=float, metavar="ACCURACY",
                       help="warn (exit status still 0) when the test accuracy ends under this floor")
    train.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from ferry.train import InvalidTrainConfigError, TrainConfig, TrainError, train

    if args.warn_below is not None and not 0 < args.warn_below <= 1:
        return _fail(f"--warn-below {args.warn_below:g} must be an accuracy between 0 and 1", EXIT_USAGE)
    try:
        config = TrainConfig(
            base=args.base, data=args.data, out=args.out, neutral=args.neutral,
            labels=tuple(label.strip() for label in args.labels.split(",")) if args.labels else None,
            text_column=args.text_column, label_column=args.label_column, steps=args.steps,
            batch_size=args.batch_size, learning_rate=args.learning_rate, max_length=args.max_length,
            max_minutes=args.max_minutes, max_train_texts=args.max_train_texts,
            max_eval_texts=args.max_eval_texts, min_confidence=args.min_confidence, seed=args.seed,
            frozen_layers=args.frozen_layers, sampling=args.sampling,
        )
        result = train(config, progress=_progress)
    except InvalidTrainConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except TrainError as exc:
        return _fail(str(exc))
    print(format_train_summary(result.report, result.out))
    warning = accuracy_warning(result.report, result.out, args.warn_below)
    if warning:
        sys.stderr.write(f"ferry: warning: {warning}\n")
    return 0


def accuracy_warning(report: dict[str, Any], out: Path, floor: float | None) -> str | None:
    """What to say when a model trained under its accuracy floor: the likely cause is a short or busy run."""
    split = "test" if "test" in report["splits"] else "validation"
    accuracy = report["splits"][split]["accuracy"] if split in report["splits"] else None
    if floor is None or accuracy is None or accuracy >= floor:
        return None
    return (f"{split} accuracy {accuracy:.4f} is under {floor:.2f} after {report['steps']} steps in "
            f"{report['wall_seconds']:.0f} s. A busy or slow machine plans fewer steps inside --max-minutes: train "
            f"again on an idle machine or with more minutes (make up: remove {out} and set TRAIN_MINUTES).")


def format_train_summary(report: dict[str, Any], out: Path) -> str:
    rows = [f"trained {out} from {report['base']} on {report['data']} ({', '.join(report['labels'])})",
            f"  steps {report['steps']} (best {report['best_step']}), {report['wall_seconds']:.0f} s"
            + (f"; {report['stopped_early']}" if report["stopped_early"] else "")]
    for split, metrics in report["splits"].items():
        recall = ", ".join(f"{label} {m['recall']:.3f}" for label, m in metrics["per_class"].items())
        rows.append(f"  {split:11}accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  "
                    f"recall {recall}  (n={metrics['n']})")
    return "\n".join(rows)


# --- ferry predict / ferry models ----------------------------------------------------------------------------


def _add_predict(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    predict = commands.add_parser("predict", help="run a built model on texts (classify or embed)")
    predict.add_argument("model", help="model name (a folder of --layers-dir) or the path of a model/layer folder")
    predict.add_argument("texts", nargs="+", help="texts; '-' reads one text per line from stdin")
    predict.add_argument("--layers-dir", type=Path, default=None, help="folder of layers (default layers/model)")
    predict.add_argument("--top-k", type=int)
    predict.add_argument("--json", action="store_true", help="print the full answer as JSON")
    predict.set_defaults(run=_run_predict)


def _add_models(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = commands.add_parser("models", help="list the built models")
    models.add_argument("--layers-dir", type=Path, default=None)
    models.set_defaults(run=_run_models)


def _search_path(layers_dir: Path | None) -> list[Path]:
    from ferry.runtime import layer_models_dirs, models_search_path

    if layers_dir is None and os.environ.get("FERRY_MODELS_DIR"):
        return models_search_path()
    return layer_models_dirs(layers_dir or DEFAULT_LAYERS_DIR)


def _run_predict(args: argparse.Namespace) -> int:
    from ferry.runtime import FerryRuntimeError, Predictor, resolve_model_dir

    texts = args.texts
    if texts == ["-"]:
        texts = [line for line in sys.stdin.read().splitlines() if line.strip()]
    if not texts:
        return _fail("no texts: pass them as arguments or one per line on stdin", EXIT_USAGE)
    try:
        candidate = Path(args.model)
        model_dir = candidate if candidate.is_dir() else resolve_model_dir(args.model, _search_path(args.layers_dir))
        predictor = Predictor.load(model_dir)
        if predictor.task == "text-classification":
            answer: Any = predictor.classify(texts, top_k=args.top_k)
        else:
            answer = predictor.embed(texts).astype(float).round(6).tolist()
    except FerryRuntimeError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps({"model": predictor.name, "version": predictor.version, "predictions": answer}))
        return 0
    for text, item in zip(texts, answer, strict=True):
        if predictor.task == "text-classification":
            shown = ", ".join(f"{entry['label']} {entry['score']:.3f}" for entry in item)
        else:
            shown = f"{len(item)}-d vector [{', '.join(f'{v:.4f}' for v in item[:4])}, ...]"
        print(f"{predictor.name} {predictor.version}  {text[:60]!r}  ->  {shown}")
    return 0


def _run_models(args: argparse.Namespace) -> int:
    from ferry.runtime import FerryRuntimeError, Manifest, discover_models

    found = discover_models(_search_path(args.layers_dir))
    if not found:
        return _fail("no built models; run `ferry build` (or `make up`)")
    for name, path in sorted(found.items()):
        try:
            manifest = Manifest.load(path)
        except FerryRuntimeError as exc:
            print(f"{name:20} unreadable: {exc}")
            continue
        parity = manifest.extra.get("parity") or {}
        accuracy = (f"  int8 accuracy {parity['accuracy_int8']:.4f} on {parity['texts']} texts"
                    if isinstance(parity.get("accuracy_int8"), float) and parity.get("texts") else "")
        print(f"{name:20} {manifest.version}  {manifest.task:20} {path}{accuracy}")
    return 0


# --- ferry serve / ferry invoke -------------------------------------------------------------------------------


def _add_local(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser("serve", help="serve the API locally: the same handlers, an embedded AWS, no Docker")
    serve.add_argument("--port", type=int, default=3000)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--layers-dir", type=Path, default=DEFAULT_LAYERS_DIR)
    serve.add_argument("--api-key", help="require Authorization: Bearer KEY (off by default, as sam local)")
    serve.add_argument("--template", type=Path, default=Path("template.yaml"))
    serve.set_defaults(run=_run_serve)

    invoke = commands.add_parser("invoke", help="invoke one function with an event file, as `sam local invoke`")
    invoke.add_argument("function", help="the template's logical id (PredictFunction) or its functions/ folder")
    invoke.add_argument("-e", "--event", type=Path, required=True, help="the event JSON file")
    invoke.add_argument("--layers-dir", type=Path, default=DEFAULT_LAYERS_DIR)
    invoke.add_argument("--template", type=Path, default=Path("template.yaml"))
    invoke.set_defaults(run=_run_invoke)


def _add_batch(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    batch = commands.add_parser("batch", help="run a JSONL/CSV file through the S3 batch function, locally")
    batch.add_argument("file", type=Path, help="JSONL ({\"text\": ...} a line) or CSV with a text column")
    batch.add_argument("--model", required=True, help="the model to run")
    batch.add_argument("--out", type=Path, help="where to write the predictions (default FILE.predictions.jsonl); "
                       "refused records, with their line and why, go beside it to FILE.errors.jsonl")
    batch.add_argument("--layers-dir", type=Path, default=DEFAULT_LAYERS_DIR)
    batch.add_argument("--template", type=Path, default=Path("template.yaml"))
    batch.set_defaults(run=_run_batch)


def _run_batch(args: argparse.Namespace) -> int:
    import contextlib

    from botocore.exceptions import BotoCoreError, ClientError

    from ferry.local.template import TemplateError
    from ferry.runtime import FerryRuntimeError

    if not args.file.is_file():
        return _fail(f"{args.file}: no such file", EXIT_USAGE)
    if args.file.suffix not in (".jsonl", ".csv"):
        return _fail(f"{args.file}: unknown format {args.file.suffix!r}; use .jsonl or .csv", EXIT_USAGE)
    out = args.out or args.file.with_name(args.file.stem + ".predictions.jsonl")
    with contextlib.redirect_stdout(sys.stderr):
        try:
            stack = _start_stack(args)
        except (TemplateError, FileNotFoundError) as exc:
            return _fail(str(exc), EXIT_USAGE)
        try:
            try:
                answer = stack.drop_file("BatchBucket", f"input/{args.model}/{args.file.name}", args.file)
            except (FerryRuntimeError, BotoCoreError, ClientError) as exc:  # the function raised: not finished
                return _fail(f"{args.file}: the batch was not finished: {exc}")
            outcome = (answer.get("results") or [{"error": answer.get("rejected", "no result")}])[0]
            if "error" in outcome:
                return _fail(outcome["error"])
            s3, bucket = stack.client("s3"), stack.table_names["BatchBucket"]
            temporary = out.with_name(f".{out.name}.tmp")
            s3.download_file(bucket, outcome["output"], str(temporary))
            temporary.replace(out)
            errors = out.with_name(out.stem.removesuffix(".predictions") + ".errors.jsonl")
            if outcome["errors"]:
                s3.download_file(bucket, outcome["output"].replace(".predictions.", ".errors."), str(errors))
            else:
                errors.unlink(missing_ok=True)  # an earlier run's, which would be taken for this one's
        finally:
            stack.stop()
    print(f"{outcome['records']} records: {outcome['predicted']} predictions -> {out}" +
          (f"; {outcome['errors']} refused -> {errors}" if outcome["errors"] else ""))
    return 0


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; 0 means no quota")
    return value


def _key_id_argument(text: str) -> str:
    from ferry.runtime.keys import KEY_ID_RE

    if not KEY_ID_RE.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a key id (16 hex digits, as `ferry keys list` shows)")
    return text


def _add_keys(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="API keys for the apikey auth mode")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help)
        parser.add_argument("--table", required=True, help="the stack's KeysTableName output")
        parser.add_argument("--region", help="AWS region (default: the AWS configuration's)")
        parser.add_argument("--endpoint-url", help="another DynamoDB endpoint (e.g. the local stack's)")
        return parser

    create = action("create", "make a key, store its salted hash, print the key once")
    create.add_argument("--name", default="default", help="who or what the key is for")
    create.add_argument("--daily-quota", type=_non_negative, metavar="N",
                        help="predictions a UTC day for this key; 0 for none (default: the stack's DailyQuota)")
    create.set_defaults(run=_run_keys_create)
    listing = action("list", "show every key: id, name, created, revoked, daily quota, today's usage")
    listing.add_argument("--usage-table", help="the stack's usage table, for today's usage (default: not shown)")
    listing.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    listing.set_defaults(run=_run_keys_list)
    revoke = action("revoke", "revoke a key by its id (API Gateway may accept it for up to 5 more minutes)")
    revoke.add_argument("key_id", type=_key_id_argument, metavar="ID", help="the key's id (`ferry keys list`)")
    revoke.set_defaults(run=_run_keys_revoke)


def _dynamodb(args: argparse.Namespace) -> Any:
    import boto3
    from botocore.config import Config

    # few retries: a wrong endpoint or a missing table should answer in seconds, not after botocore's backoff
    config = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=10)
    return boto3.resource("dynamodb", region_name=args.region, endpoint_url=args.endpoint_url, config=config)


def _aws_failure(exc: Exception, table: str, doing: str) -> int:
    """One line for what boto3 raised: a missing table, credentials or region, an unreachable endpoint."""
    from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError

    if isinstance(exc, NoCredentialsError):
        return _fail(f"cannot {doing} in {table}: no AWS credentials (configure them, or set AWS_PROFILE)")
    if isinstance(exc, NoRegionError):
        return _fail(f"cannot {doing} in {table}: no AWS region (give --region, or set AWS_DEFAULT_REGION)")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        if error.get("Code") == "ResourceNotFoundException":
            return _fail(f"cannot {doing}: no table {table} in this region/endpoint (use the stack's output name)")
        return _fail(f"cannot {doing} in {table}: {error.get('Code', 'error')}: {error.get('Message', '')}")
    return _fail(f"cannot {doing} in {table}: {exc}")


def _run_keys_create(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from ferry.runtime.keys import ApiKeyError, new_key, store_key

    key = new_key()
    try:
        identifier = store_key(_dynamodb(args).Table(args.table), key, args.name, quota=args.daily_quota)
    except (BotoCoreError, ClientError) as exc:
        return _aws_failure(exc, args.table, "store the key")
    except ApiKeyError as exc:
        return _fail(str(exc))
    quota = "the stack's daily quota" if args.daily_quota is None else (
        "no daily quota" if args.daily_quota == 0 else f"a daily quota of {args.daily_quota}")
    sys.stderr.write(f"ferry: key {identifier} ({args.name}, {quota}) stored as a salted hash; it is shown once:\n")
    print(key)
    return 0


def _run_keys_list(args: argparse.Namespace) -> int:
    import dataclasses
    import time

    from botocore.exceptions import BotoCoreError, ClientError

    from ferry.runtime.keys import list_keys, usage_on, utc_day

    try:
        dynamodb = _dynamodb(args)
        keys = list_keys(dynamodb.Table(args.table))
    except (BotoCoreError, ClientError) as exc:
        return _aws_failure(exc, args.table, "list the keys")
    if args.usage_table:
        try:
            used = usage_on(dynamodb, args.usage_table, [key.key_id for key in keys], utc_day(time.time()))
        except (BotoCoreError, ClientError) as exc:
            return _aws_failure(exc, args.usage_table, "read today's usage")
        keys = [dataclasses.replace(key, used_today=used.get(key.key_id, 0)) for key in keys]
    if args.json:
        print(json.dumps([key.to_dict() for key in keys], indent=2))
        return 0
    print(format_keys(keys))
    return 0


def format_keys(keys: Sequence[Any]) -> str:
    """`ferry keys list` as a table: a quota of None is the stack's, 0 none; usage of None was not read."""
    rows = [("ID", "NAME", "CREATED (UTC)", "REVOKED", "DAILY QUOTA", "USED TODAY")]
    for key in keys:
        quota = "stack default" if key.quota is None else ("none" if key.quota == 0 else str(key.quota))
        rows.append((key.key_id, key.name, key.created_utc, "revoked" if key.revoked else "no", quota,
                     "-" if key.used_today is None else str(key.used_today)))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines + ([] if keys else ["(no keys)"]))


def _run_keys_revoke(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from ferry.runtime.keys import ApiKeyError, revoke_key

    try:
        changed = revoke_key(_dynamodb(args).Table(args.table), args.key_id)
    except (BotoCoreError, ClientError) as exc:
        return _aws_failure(exc, args.table, "revoke the key")
    except ApiKeyError as exc:
        return _fail(f"{exc} in {args.table}; `ferry keys list --table {args.table}` shows the ids")
    if changed:
        print(f"ferry: key {args.key_id} revoked; API Gateway may still accept it for up to 5 minutes "
              "(the authorizer's cache)")
    else:
        print(f"ferry: key {args.key_id} was already revoked")
    return 0


def _start_stack(args: argparse.Namespace) -> Any:
    from ferry.local.stack import LocalStack

    if not args.layers_dir.is_dir():
        raise FileNotFoundError(f"--layers-dir {args.layers_dir}: no such folder; build models first (make up)")
    return LocalStack(root=args.template.resolve().parent, layers_dir=args.layers_dir.resolve(),
                      template_path=args.template).start()


def _run_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from ferry.local.gateway import Gateway
    from ferry.local.template import TemplateError

    try:
        stack = _start_stack(args)
    except (TemplateError, FileNotFoundError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    from ferry.runtime.keys import ApiKeyError

    try:
        gateway = Gateway(stack, args.host, args.port, api_key=args.api_key)
    except OSError as exc:
        stack.stop()
        return _fail(f"cannot listen on {args.host}:{args.port} ({exc.strerror}); try --port")
    except ApiKeyError as exc:
        stack.stop()
        return _fail(f"--api-key: {exc}", EXIT_USAGE)
    stopping = threading.Event()
    # both set explicitly: a shell that starts a job in the background without job control makes it ignore
    # SIGINT, and Python then installs no KeyboardInterrupt handler
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    gateway.serve_in_background()
    if args.api_key is None and not _is_loopback(args.host):
        sys.stderr.write(open_host_warning(args.host))
        sys.stderr.flush()
    # the key is never echoed: the banner lands in terminals, scrollback and CI logs
    auth = ' -H "Authorization: Bearer $FERRY_API_KEY"' if args.api_key else ""
    print(f"ferry: serving {', '.join(sorted(_served(stack))) or 'no models'} at {gateway.url} "
          f"(embedded AWS at {stack.endpoint}); Ctrl-C stops", flush=True)
    if args.api_key:
        print("  export FERRY_API_KEY=<the key given to --api-key>", flush=True)
    print(f"  curl -s {gateway.url}/v1/models/sentiment/predict{auth} -H 'Content-Type: application/json' "
          "-d '{\"inputs\": \"I love this\"}'", flush=True)
    try:
        stopping.wait()
    finally:
        gateway.shutdown()
        gateway.server_close()
        stack.stop()
        print("ferry: stopped", flush=True)
    return 0


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost: it may well resolve to a reachable address


def open_host_warning(host: str) -> str:
    bar = "ferry: " + "!" * 72
    return "\n".join([
        bar,
        f"ferry: WARNING: serving on {host} without --api-key: anyone who can reach this machine on the",
        "ferry: WARNING: network can call every model and read what the API shows (manifests, metrics,",
        "ferry: WARNING: prediction ids). Give --api-key KEY, or serve on 127.0.0.1 (the default).",
        bar,
    ]) + "\n"


def _served(stack: Any) -> list[str]:
    from ferry.runtime import discover_models, layer_models_dirs

    return list(discover_models(layer_models_dirs(stack.layers_dir)))


def _run_invoke(args: argparse.Namespace) -> int:
    import contextlib

    from ferry.local.template import TemplateError

    try:
        event = json.loads(args.event.read_text(encoding="utf-8"))
    except OSError as exc:
        return _fail(f"--event {args.event}: cannot be read ({exc.strerror})", EXIT_USAGE)
    except ValueError as exc:
        return _fail(f"--event {args.event}: not valid JSON ({exc})", EXIT_USAGE)
    # as `sam local invoke`: the function's logs on stderr, its response alone on stdout
    with contextlib.redirect_stdout(sys.stderr):
        try:
            stack = _start_stack(args)
        except (TemplateError, FileNotFoundError) as exc:
            return _fail(str(exc), EXIT_USAGE)
        try:
            response = _invoke_named(stack, args.function, event)
        finally:
            stack.stop()
    if response is None:
        return EXIT_USAGE
    print(json.dumps(response, indent=2, default=str))
    return 0


def _invoke_named(stack: Any, function: str, event: Any) -> Any:
    by_folder = {f.function.code_uri.name: name for name, f in stack.functions.items()}
    name = function if function in stack.functions else by_folder.get(function.strip("/"))
    if name is None:
        _fail(f"no function {function!r} in the template; known: {', '.join(sorted(stack.functions))}")
        return None
    return stack.invoke(name, event)


# --- ferry captures -------------------------------------------------------------------------------------------


def _add_captures(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ferry.runtime.constants import DEFAULT_CAPTURE_TTL_DAYS

    captures = commands.add_parser("captures", help="captured predictions: replay the capture dead-letter queue")
    actions = captures.add_subparsers(dest="action", required=True, metavar="ACTION")
    replay = actions.add_parser(
        "replay", help="write the captures of the deliveries that failed, then delete their messages",
        description="Read the capture function's dead-letter queue (the subscription events Lambda gave up on), "
        "write their captures as the capture function does (once each: the same conditional put) and delete each "
        "message once its captures are in the table. Messages that are not subscription events are reported and "
        "left in the queue; exit status 1 when any message is left.")
    replay.add_argument("--queue", required=True,
                        help="the stack's CaptureDeadLetterQueueUrl output, or the queue's name")
    replay.add_argument("--table", required=True, help="the stack's CaptureTableName output")
    replay.add_argument("--usage-table", help="the stack's UsageTableName output: captures written count toward their "
                        "keys' daily usage, as the capture function counts them (default: not counted)")
    replay.add_argument("--ttl-days", type=_capture_days, default=DEFAULT_CAPTURE_TTL_DAYS,
                        help="the stack's CaptureRetentionDays (default %(default)s)")
    replay.add_argument("--region", help="AWS region (default: the AWS configuration's)")
    replay.add_argument("--endpoint-url", help="another AWS endpoint (e.g. the local stack's embedded AWS)")
    replay.add_argument("--dry-run", action="store_true",
                        help="write and delete nothing; count the captures missing from the table")
    replay.set_defaults(run=_run_captures_replay)


def _capture_days(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days (1 or more)")
    return int(text)


def _run_captures_replay(args: argparse.Namespace) -> int:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    from ferry.runtime.replay import replay_dead_letters

    config = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=30)
    try:
        sqs = boto3.client("sqs", region_name=args.region, endpoint_url=args.endpoint_url, config=config)
        queue_url = args.queue if "://" in args.queue else sqs.get_queue_url(QueueName=args.queue)["QueueUrl"]
        dynamodb = _dynamodb(args)
        result = replay_dead_letters(sqs, queue_url, dynamodb.Table(args.table), args.ttl_days,
                                     dynamodb.Table(args.usage_table) if args.usage_table else None,
                                     dry_run=args.dry_run)
    except (BotoCoreError, ClientError) as exc:
        return _replay_failure(exc, args)
    for message_id, why in result.bad + result.failed:
        sys.stderr.write(f"ferry: warning: message {message_id} left in the queue: {why}\n")
    for (key_id, day), count in result.usage_lost.items():
        sys.stderr.write(f"ferry: warning: {count} predictions of key {key_id} on {day} not added to its usage\n")
    print(format_replay(result, args.queue, args.table, args.dry_run))
    return EXIT_FAILED if result.left else 0


def _replay_failure(exc: Exception, args: argparse.Namespace) -> int:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in (
            "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
        return _fail(f"no queue {args.queue} in this region/endpoint "
                     "(use the stack's CaptureDeadLetterQueueUrl output)")
    on_table = isinstance(exc, ClientError) and exc.operation_name in ("GetItem", "PutItem", "UpdateItem")
    return _aws_failure(exc, args.table if on_table else args.queue, "replay the captures")


def format_replay(result: Any, queue: str, table: str, dry_run: bool) -> str:
    """`ferry captures replay`'s summary: messages replayed, captures written, already there and invalid."""
    def plural(count: int, noun: str) -> str:
        return f"{count} {noun}{'' if count == 1 else 's'}"

    if dry_run:
        line = (f"dry run: {plural(result.messages, 'message')} of {queue} to replay: "
                f"{result.written} captures missing from {table}, {result.duplicates} already there, "
                f"{result.invalid} invalid; nothing written or deleted")
    else:
        line = (f"replayed {plural(result.messages, 'message')} of {queue}: {result.written} captures written to "
                f"{table}, {result.duplicates} already there, {result.invalid} invalid")
        if result.usage:
            line += f"; {sum(result.usage.values())} counted toward their keys' usage"
    if result.left:
        line += f"; {plural(result.left, 'message')} left in the queue"
    return line


# --- entry point ---------------------------------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ferry", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_build(commands)
    _add_train(commands)
    _add_predict(commands)
    _add_models(commands)
    _add_local(commands)
    _add_batch(commands)
    _add_keys(commands)
    _add_captures(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:  # `ferry predict ... | head`: the reader left, which is not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
