"""`ferry train`: fine-tune an encoder as a text classifier (:func:`ferry.train.train`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ferry.commands._common import Subparsers, UsageError, default_of, given, in_flags, progress, warn
from ferry.data.topics import TOPICS
from ferry.train.config import SAMPLINGS, TrainConfig

if TYPE_CHECKING:
    from ferry.train import TrainingReport


def register(subparsers: Subparsers) -> None:
    train = subparsers.add_parser(
        "train",
        help="fine-tune a Hugging Face encoder as a text classifier (CPU, torch)",
        description="Fine-tune --base on labelled texts and write a Hugging Face model folder with a training "
        "report. --data default is the bundled tweets (negative/positive; --neutral adds the third class).",
    )

    def default(name: str) -> str:
        return f"(default {default_of(TrainConfig, name)})"

    train.add_argument("--base", required=True, help="a local model folder, or a packaged hub id")
    train.add_argument("--data", required=True, help="'default' or a CSV/JSONL file of texts and labels")
    train.add_argument("--out", type=Path, required=True, help="the model folder to write")
    train.add_argument("--neutral", action="store_true", default=None, help="bundled tweets: three classes")
    train.add_argument("--labels", type=_labels, help="comma-separated labels of a user file, in class order")
    train.add_argument("--text-column", help=default("text_column"))
    train.add_argument("--label-column", help=default("label_column"))
    train.add_argument("--steps", type=int, help=default("steps"))
    train.add_argument("--batch-size", type=int, help=default("batch_size"))
    train.add_argument("--learning-rate", type=float, help=default("learning_rate"))
    train.add_argument("--max-length", type=int, help=default("max_length"))
    train.add_argument("--max-minutes", type=float, help="wall-clock budget, final evaluation included")
    train.add_argument("--max-train-texts", type=int, help="train on a slice (quick runs)")
    train.add_argument("--max-eval-texts", type=int, help="evaluate on a slice (quick runs)")
    train.add_argument("--min-confidence", type=float,
                       help=f"drop training rows whose confidence is below it (default "
                       f"{default_of(TrainConfig, 'min_confidence')}; rows without one stay)")
    train.add_argument("--frozen-layers", type=int,
                       help=f"lowest encoder layers kept as pre-trained {default('frozen_layers')}")
    train.add_argument("--sampling", choices=SAMPLINGS,
                       help="shuffled epochs, or classes drawn uniformly (then the prior is corrected at the end) "
                       + default("sampling"))
    train.add_argument("--seed", type=int, help=default("seed"))
    train.add_argument("--exclude-topic", dest="exclude_topics", action="append", metavar="TOPIC",
                       help=f"leave a topic's texts out (repeatable): {', '.join(TOPICS)} (the drift demo)")
    train.add_argument("--warn-below", type=float, metavar="ACCURACY",
                       help="warn (exit status still 0) when the test accuracy ends under this floor")
    train.set_defaults(run=run)


def _labels(text: str) -> tuple[str, ...]:
    return tuple(label.strip() for label in text.split(","))


def run(args: argparse.Namespace) -> int:
    from ferry.train import train

    if args.warn_below is not None and not 0 < args.warn_below <= 1:
        raise UsageError(f"--warn-below {args.warn_below:g} must be an accuracy between 0 and 1")
    result = train(TrainConfig(**given(args, TrainConfig)), progress=progress(args))
    report = result.training_report
    print(format_train_summary(report, result.out, say=lambda text: in_flags(text, args)))
    warning = accuracy_warning(report, result.out, args.warn_below)
    if warning:
        warn(warning)
    return 0


def accuracy_warning(report: TrainingReport, out: Path, floor: float | None) -> str | None:
    """What to say when a model trained under its accuracy floor: the likely cause is a short or busy run."""
    split = "test" if "test" in report.splits else "validation"
    accuracy = report.splits[split].accuracy if split in report.splits else None
    if floor is None or accuracy is None or accuracy >= floor:
        return None
    return (f"{split} accuracy {accuracy:.4f} is under {floor:.2f} after {report.steps} steps in "
            f"{report.wall_seconds:.0f} s. A busy or slow machine plans fewer steps inside --max-minutes: train "
            f"again on an idle machine or with more minutes (make up: remove {out} and set TRAIN_MINUTES).")


def format_train_summary(report: TrainingReport, out: Path, say: Callable[[str], str] = str) -> str:
    """The run in a few lines: data and labels, steps, and each split's figures. `say` tells the library's note on
    a run stopped early in the caller's terms (the command's flags)."""
    rows = [f"trained {out} from {report.base} on {report.data} ({', '.join(report.labels)})",
            f"  steps {report.steps} (best {report.best_step}), {report.wall_seconds:.0f} s"
            + (f"; {say(report.stopped_early)}" if report.stopped_early else "")]
    for split, metrics in report.splits.items():
        recall = ", ".join(f"{label} {figures.recall:.3f}" for label, figures in metrics.per_class.items())
        rows.append(f"  {split:11}accuracy {metrics.accuracy:.4f}  macro-F1 {metrics.macro_f1:.4f}  "
                    f"recall {recall}  (n={metrics.n})")
    return "\n".join(rows)
