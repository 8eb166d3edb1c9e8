"""`ferry bench`: the int8 layer against the PyTorch and Optimum pipelines, the local API under load, and the cost
of a million predictions (:func:`ferry.bench.run_bench`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ferry.commands._common import DEFAULT_LAYERS_DIR, Subparsers, UsageError, given, progress


def _counts(text: str) -> tuple[int, ...]:
    """A comma-separated list of whole numbers (``1,2``)."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None


def register(subparsers: Subparsers) -> None:
    from ferry.bench.config import DEFAULT_MEMORY_MB, DEFAULT_OUT, DEFAULT_SOURCES_DIR, DEFAULT_THREADS, FULL, QUICK

    bench = subparsers.add_parser(
        "bench", help="compare the int8 layer with the PyTorch and Optimum pipelines; load the local API; price it",
        description="On the model's test split, each in a fresh process of its own: the transformers pipeline on "
        "PyTorch fp32 (the baseline), Optimum's ORTModel pipeline on fp32 ONNX, ferry's Predictor on fp32 ONNX and "
        "on the int8 layer, and the predict handler on the int8 layer; latency p50/p95 at 1 and 8 texts of about 32 "
        "and 128 tokens, cold start, peak RSS, size and accuracy, at each thread count; then the local HTTP API "
        "under a bounded concurrent load, and the cost of a million predictions on Lambda beside a SageMaker "
        "endpoint. Writes OUT/bench.json, bench.md and bench.png (docs/bench.md).")
    bench.add_argument("--model", help="the model's name: its layer in --layers-dir (default sentiment)")
    bench.add_argument("--layers-dir", type=Path, help=f"folder of model layers (default {DEFAULT_LAYERS_DIR})")
    bench.add_argument("--source", type=Path,
                       help=f"the model's fp32 Hugging Face folder (default {DEFAULT_SOURCES_DIR}/MODEL)")
    bench.add_argument("--data", type=Path, help="labelled test rows, CSV or JSONL (default: SOURCE/predictions/"
                       "test.jsonl, else the bundled tweets' test split)")
    bench.add_argument("--out", type=Path, help=f"output folder (default {DEFAULT_OUT})")
    bench.add_argument("--repeats", type=int, help=f"timed calls per shape (default {FULL.repeats}; "
                       f"--quick {QUICK.repeats})")
    bench.add_argument("--rounds", type=int, help=f"rounds through every candidate's latency runs, pooled (default "
                       f"{FULL.rounds}; --quick {QUICK.rounds})")
    bench.add_argument("--quick", action="store_true",
                       help="a few repeats, a small accuracy sample, a tiny load test (the tests use it)")
    bench.add_argument("--threads", type=_counts, help=f"thread counts to measure (default "
                       f"{','.join(map(str, DEFAULT_THREADS))})")
    bench.add_argument("--cold-runs", type=int, help=f"fresh processes for the cold start (default {FULL.cold_runs}; "
                       "0: the full run's own)")
    bench.add_argument("--accuracy-rows", type=int, help="test rows for the accuracy, evenly spaced (default: all; "
                       f"--quick {QUICK.accuracy_rows})")
    bench.add_argument("--load-requests", type=int, help=f"the load test's requests at most (default "
                       f"{FULL.load_requests})")
    bench.add_argument("--load-seconds", type=float, help=f"... and seconds at most (default {FULL.load_seconds:g})")
    bench.add_argument("--load-clients", type=int, help=f"concurrent clients (default {FULL.load_clients})")
    bench.add_argument("--memory-mb", type=_counts, help="Lambda memory sizes to price (default "
                       f"{','.join(map(str, DEFAULT_MEMORY_MB))})")
    bench.add_argument("--prices", type=Path, help="a JSON file of prices to change (docs/bench.md)")
    bench.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ferry.bench import BenchConfig, Prices, run_bench
    from ferry.bench.markdown import summary_lines

    options = given(args, BenchConfig)
    if args.prices is not None:
        if not args.prices.is_file():
            raise UsageError(f"--prices {args.prices}: no such file")
        options["prices"] = Prices.from_file(args.prices)
    document = run_bench(BenchConfig(**options), progress(args))
    for line in summary_lines(document):
        print(line)
    print(f"wrote {', '.join(document['files'])}")
    return 0
