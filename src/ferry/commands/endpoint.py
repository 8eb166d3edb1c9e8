"""`ferry serve-endpoint`: a text-generation model served on this machine's CPU as a SageMaker endpoint running
AWS's LMI container would serve it (:func:`ferry.endpoint.server.serve`), for the generate function and clients to
call without an AWS account."""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ferry.commands._common import CommandError, Subparsers, UsageError

if TYPE_CHECKING:
    from ferry.endpoint.engine import Engine
    from ferry.endpoint.server import EndpointServer

DEFAULT_MODEL = Path("build/endpoints/smollm2")  # what `make llm` builds
DEFAULT_HOST = "127.0.0.1"  # ferry.endpoint.server's (not imported here: `ferry --help` stays light)
DEFAULT_PORT = 8080
ENDPOINT_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # SageMaker's rule for endpoint names


def register(subparsers: Subparsers) -> None:
    command = subparsers.add_parser(
        "serve-endpoint",
        help="serve a text-generation model as a SageMaker endpoint (LMI's dialect) on this machine's CPU",
        description="Serve a text-generation model over the HTTP contract of a SageMaker endpoint running LMI: "
        "GET /ping and POST /invocations as the container, POST /endpoints/NAME/invocations as the SageMaker "
        "runtime (boto3's sagemaker-runtime client with endpoint_url), POST /v1/chat/completions for OpenAI clients.",
    )
    command.add_argument("--host", default=DEFAULT_HOST, help="(default %(default)s: this machine only)")
    command.add_argument("--port", type=_port, default=DEFAULT_PORT, help="(default %(default)s; 0: any free port)")
    command.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                         help="a built endpoint folder (holding model/) or a Hugging Face model folder "
                         "(default %(default)s, which `make llm` builds)")
    command.add_argument("--endpoint-name", type=_endpoint_name,
                         help="the one endpoint name the runtime path answers to (default: the model's name)")
    command.add_argument("--threads", type=_threads,
                         help="torch threads (default: one a core; on a machine busy with other work, 1 can be "
                         "much faster)")
    command.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Exit status 0 once stopped by SIGINT or SIGTERM after serving; 128 + the signal's number when it came
    while the model was loading, so that nothing was served; 1 when the model fails to load."""
    from ferry.endpoint.exceptions import EndpointError, ModelNotFoundError
    from ferry.endpoint.server import serve
    from ferry.local.server import StopSignals

    if not args.model.exists():
        hint = "run `make llm` to build it" if args.model == DEFAULT_MODEL else "give a model folder"
        raise UsageError(f"--model {args.model}: no such folder ({hint}, or give --model DIR, a Hugging Face "
                         "model folder)")
    handler = _log_requests()
    try:
        with StopSignals() as signals:
            try:
                server = serve(args.model, host=args.host, port=args.port, endpoint_name=args.endpoint_name,
                               threads=args.threads)
            except ModelNotFoundError as exc:
                raise UsageError(f"--model {exc}") from None
            try:
                sys.stderr.write(f"ferry: loading the model in {args.model}...\n")
                sys.stderr.flush()
                while not server.model.done.is_set() and signals.wait(0.1) is None:
                    pass
                if signals.received is not None:
                    sys.stderr.write(f"ferry: stopped by {signal.Signals(signals.received).name} before serving\n")
                    return 128 + signals.received
                try:
                    engine = server.wait_ready()
                except EndpointError:
                    raise
                except Exception as exc:
                    raise CommandError(f"the model in {args.model} failed to load: {exc}") from None
                print(banner(server, engine), flush=True)
                signals.wait()
            finally:
                server.stop()
    finally:
        logging.getLogger("ferry.endpoint").removeHandler(handler)
    print("ferry: stopped", flush=True)
    return 0


def banner(server: EndpointServer, engine: Engine) -> str:
    """What is served where, and a request to try in each dialect."""
    url, name = server.url, server.endpoint_name
    return "\n".join([
        f"ferry: serving {engine.model_dir} as endpoint {name} at {url} ({engine.device}, {engine.dtype}, context "
        f"{engine.context_length} tokens, loaded in {engine.load_seconds:.1f} s); Ctrl-C stops",
        f"  curl -s {url}/invocations -H 'Content-Type: application/json' "
        "-d '{\"inputs\": \"The capital of France is\", \"parameters\": {\"max_new_tokens\": 16}}'",
        f"  curl -s {url}/v1/chat/completions -H 'Content-Type: application/json' "
        "-d '{\"messages\": [{\"role\": \"user\", \"content\": \"What is the capital of France?\"}]}'",
        f"  boto3.client(\"sagemaker-runtime\", endpoint_url=\"{url}\").invoke_endpoint(EndpointName=\"{name}\", ...)",
    ])


def _log_requests() -> logging.Handler:
    """The server's one line a request, on stderr, while the command runs."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("ferry: %(message)s"))
    logger = logging.getLogger("ferry.endpoint")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65_535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0 to 65535)")
    return int(text)


def _threads(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 256:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of threads (1 to 256)")
    return int(text)


def _endpoint_name(text: str) -> str:
    if not ENDPOINT_NAME.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a SageMaker endpoint name (letters, digits and hyphens, "
                                         "up to 63, starting and ending with a letter or digit)")
    return text
