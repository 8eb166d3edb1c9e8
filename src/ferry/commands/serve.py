"""`ferry serve`: the API on this machine, the same handlers as in AWS (:func:`ferry.local.server.serve`)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ferry.commands._common import Subparsers, UsageError, progress
from ferry.commands._local import add_layers_dir, add_template, local_errors, project
from ferry.local.server import DEFAULT_CONCURRENCY, DEFAULT_HOST, DEFAULT_PORT

if TYPE_CHECKING:
    from ferry.local.endpoint import LargeModel
    from ferry.local.stack import LocalStack


def register(subparsers: Subparsers) -> None:
    serve = subparsers.add_parser("serve", help="serve the API locally: the same handlers, an embedded AWS, no Docker")
    serve.add_argument("--port", type=int, help=f"(default {DEFAULT_PORT})")
    serve.add_argument("--host", help=f"(default {DEFAULT_HOST}: this machine only)")
    add_layers_dir(serve)
    serve.add_argument("--concurrency", type=_count, metavar="N",
                       help="processes of each function, so that N requests of it are served at once, each "
                       "with its share of the cores (default "
                       f"{DEFAULT_CONCURRENCY}; each predict process loads every model; a function whose template "
                       "reserves less gets that)")
    serve.add_argument("--api-key", help="require Authorization: Bearer KEY (off by default, as sam local)")
    serve.add_argument("--monitor-every", type=_seconds, metavar="SECONDS",
                       help="run the monitor function this often (default: the template's MonitorEveryMinutes)")
    serve.add_argument("--no-updates", dest="updates", action="store_false",
                       help="do not run the maintenance loop (by default a ModelDegraded event, or `ferry update`, "
                       "retrains, gates and promotes through a canary in this process)")
    serve.add_argument("--canary-seconds", type=_seconds, metavar="SECONDS",
                       help="how long a canary serves its share before it goes live (default: the update's)")
    serve.add_argument("--min-labels", type=_count, metavar="N",
                       help="labelled examples since the trigger an update waits for (default: the update's)")
    serve.add_argument("--endpoint", nargs="?", type=Path, const=DEFAULT_ENDPOINT_MODEL, metavar="MODEL_DIR",
                       help="also serve a text-generation model on this machine's CPU as the stack's SageMaker "
                       "endpoint, behind /v1/models/NAME/generate and /v1/models/NAME/v1/chat/completions "
                       f"(default folder {DEFAULT_ENDPOINT_MODEL}, which `make llm` builds; or a Hugging Face folder)")
    add_template(serve)
    serve.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Exit status 0 once stopped by SIGINT or SIGTERM after serving; 128 + the signal's number (130, 143) when
    the signal came while the stack was starting, so that nothing was served."""
    from ferry.local.server import serve
    from ferry.runtime.keys import ApiKeyError

    host = DEFAULT_HOST if args.host is None else args.host
    port = DEFAULT_PORT if args.port is None else args.port

    def ready(url: str, stack: LocalStack) -> None:
        if args.api_key is None and not is_loopback(host):
            sys.stderr.write(open_host_warning(host))
            sys.stderr.flush()
        print(banner(url, stack, args.api_key is not None, updates=args.updates), flush=True)

    root, layers_dir, template = project(args)
    large_model = None if args.endpoint is None else _large_model(root, args.endpoint)
    updates = None
    if args.updates:
        from ferry.update.config import UpdateConfig

        folder = Path(os.environ.get(UPDATES_DIR_ENV) or root / "build")  # the updates' files and the versions kept
        given = {name: value for name, value in (("canary_seconds", args.canary_seconds),
                                                 ("min_labels", args.min_labels)) if value is not None}
        updates = UpdateConfig(**given, work=folder / "updates", store=folder / "registry")
    try:
        with local_errors():
            stopped = serve(root, layers_dir, template, host=host, port=port, api_key=args.api_key,
                            progress=progress(args), on_ready=ready, updates=updates, large_model=large_model,
                            concurrency=args.concurrency,
                            schedules=None if args.monitor_every is None else {MONITOR: args.monitor_every})
    except ApiKeyError as exc:
        raise UsageError(f"--api-key: {exc}") from None
    if not stopped.served:
        sys.stderr.write(f"ferry: stopped by {signal.Signals(stopped.signal).name} before serving\n")
        return 128 + stopped.signal
    print("ferry: stopped", flush=True)
    return 0


DEFAULT_ENDPOINT_MODEL = Path("build/endpoints/smollm2")  # what `make llm` builds
MONITOR = "MonitorFunction"  # the template's scheduled monitor
UPDATES_DIR_ENV = "FERRY_UPDATES_DIR"  # where updates keep their files (default <project>/build)


def _large_model(root: Path, folder: Path) -> LargeModel:
    """The model of --endpoint, named as its build named it (``build/endpoints/<name>``) or after its folder."""
    from ferry.endpoint.exceptions import ModelNotFoundError
    from ferry.endpoint.server import resolve_model
    from ferry.local.endpoint import LargeModel

    path = folder if folder.is_absolute() else root / folder
    if not path.exists():
        hint = "run `make llm` to build it" if folder == DEFAULT_ENDPOINT_MODEL else "give a model folder"
        raise UsageError(f"--endpoint {folder}: no such folder ({hint})")
    try:
        name = resolve_model(path)[1]
    except ModelNotFoundError as exc:
        raise UsageError(f"--endpoint {folder}: {exc}") from None
    return LargeModel(name, path)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 1 <= value <= 86_400:
        raise argparse.ArgumentTypeError(f"{text} seconds: give 1 to 86400")
    return value


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def banner(url: str, stack: LocalStack, keyed: bool, updates: bool = False) -> str:
    """What is served where, and a request to try. The key is never echoed: the banner lands in terminals,
    scrollback and CI logs."""
    from ferry.runtime import discover_models, layer_models_dirs

    served = ", ".join(sorted(discover_models(layer_models_dirs(stack.layers_dir)))) or "no models"
    auth = ' -H "Authorization: Bearer $FERRY_API_KEY"' if keyed else ""
    lines = [f"ferry: serving {served} at {url} (embedded AWS at {stack.endpoint}); Ctrl-C stops"]
    for schedule in stack.schedules:
        lines.append(f"  {schedule.function} runs every {schedule.seconds:g} s (ferry monitor runs it now; "
                     "ferry status, ferry report)")
    if updates and "ModelRegistryTable" in stack.resources():
        lines.append("  updates: a ModelDegraded retrains on the feedback, gates and promotes through a canary "
                     "(ferry update, ferry models history, ferry rollback)")
    if keyed:
        lines.append("  export FERRY_API_KEY=<the key given to --api-key>")
    lines.append(f"  curl -s {url}/v1/models/sentiment/predict{auth} -H 'Content-Type: application/json' "
                 "-d '{\"inputs\": \"I love this\"}'")
    if stack.large_model is not None:
        lines.append(f"  {stack.large_model.name} (text generation) on a local endpoint at {stack.large_model_url}:")
        lines.append(f"  curl -s {url}/v1/models/{stack.large_model.name}/generate{auth} -H 'Content-Type: "
                     "application/json' -d '{\"inputs\": \"The capital of France is\", \"parameters\": "
                     "{\"max_new_tokens\": 8}}'")
    return "\n".join(lines)


def is_loopback(host: str) -> bool:
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
        f"ferry: WARNING: prediction ids). Give --api-key KEY, or serve on {DEFAULT_HOST} (the default).",
        bar,
    ]) + "\n"
