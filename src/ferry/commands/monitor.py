"""`ferry monitor`, `ferry status`, `ferry report`: the monitor of a running `ferry serve`, run once, summed up
in a line per model, and drawn (:mod:`ferry.runtime.monitor`, :mod:`ferry.local.report`).

They find the stack through ``.ferry/serve.json`` in the project folder (:mod:`ferry.local.running`): moto keeps
everything in the serving process, so the commands talk to its embedded AWS.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferry.commands._common import Subparsers, UsageError
from ferry.commands._local import add_template

if TYPE_CHECKING:
    from ferry.local.running import RunningStack
    from ferry.runtime.monitor import ModelHealth


def register(subparsers: Subparsers) -> None:
    monitor = subparsers.add_parser(
        "monitor", help="run the monitor once over a running `ferry serve` and print each model's health",
        description="Run the monitor function's logic once against the stack `ferry serve` is running: labelled "
        "and estimated accuracy, drift, latency, the tests of the windows that completed, and episodes (a "
        "ModelDegraded event when one opens). `ferry serve` also runs it on its schedule (--monitor-every).")
    add_template(monitor)
    monitor.add_argument("--json", action="store_true", help="print the figures as JSON")
    monitor.set_defaults(run=run_monitor)

    status = subparsers.add_parser("status", help="each model's health at a glance (the monitor's last run)")
    add_template(status)
    status.set_defaults(run=run_status)

    report = subparsers.add_parser(
        "report", help="draw the monitor's history as a PNG: accuracy, estimated accuracy, drift, tests fired")
    add_template(report)
    report.add_argument("--model", help="the model to draw (default: the first monitored)")
    report.add_argument("--hours", type=_hours, default=24.0, help="how far back (default %(default)s)")
    report.add_argument("--out", type=Path, default=Path("monitor-report.png"), help="(default %(default)s)")
    report.set_defaults(run=run_report)


def _hours(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of hours") from None
    if not 0 < value <= 24 * 90:
        raise argparse.ArgumentTypeError(f"{text} hours: give more than 0 and at most {24 * 90}")
    return value


def _stack(args: argparse.Namespace) -> RunningStack:
    from ferry.local import running

    root = args.template.resolve().parent if args.template is not None else Path.cwd()
    return running.find(root)


def run_monitor(args: argparse.Namespace) -> int:
    from ferry.local.report import monitor_once

    results = monitor_once(_stack(args))
    if args.json:
        print(json.dumps([health.to_dict() for health in results], indent=1))
    else:
        print("\n".join(format_health(health) for health in results) or "no models to monitor")
    return 0


def run_status(args: argparse.Namespace) -> int:
    from ferry.local.report import latest_runs

    runs = latest_runs(_stack(args))
    print(format_status(runs))
    return 0


def run_report(args: argparse.Namespace) -> int:
    from ferry.local.report import draw_report

    stack = _stack(args)
    path, runs = draw_report(stack, args.out, model=args.model, hours=args.hours)
    if runs == 0:
        raise UsageError("the monitor has not run yet for that model: nothing to draw (run `ferry monitor`)")
    print(f"wrote {path} ({runs} monitor runs)")
    return 0


# -- what the commands print ----------------------------------------------------------------------------------------

def _number(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _interval(value: Any) -> str:
    return "" if not value else f" [{value[0]:.3f}, {value[1]:.3f}]"


def format_health(health: ModelHealth) -> str:
    """One model's run: status, traffic, labelled and estimated accuracy, drift, the tests of this run, notes."""
    figures = health.to_dict()
    status = figures["status"].upper()
    if health.episode:
        status += f" (episode {health.episode['id']}: {', '.join(health.episode['tests'])})"
    if health.event_sent:
        status += f"; {health.event_sent} sent"
    latency = health.latency
    errors = ", ".join(f"{code} {count}" for code, count in sorted(health.errors.items())) or "none"
    percentiles = " / ".join(f"{name} {_number(latency.get(f'{name}_ms'), 1)}" for name in ("p50", "p95", "p99"))
    lines = [f"{health.model} {health.version}: {status}",
             f"  traffic    {health.predictions} predictions in the window; latency {percentiles} ms "
             f"({latency.get('requests', 0)} requests); errors {errors}"]
    labelled = health.labelled
    if labelled.get("labels"):
        recall = ", ".join(f"{label} {r['recall']:.3f} (n={r['labels']})" for label, r in labelled["recall"].items())
        lines.append(f"  labelled   accuracy {_number(labelled['accuracy'])}{_interval(labelled['accuracy_interval'])} "
                     f"on {labelled['labels']} labels ({labelled['population']}); macro-F1 "
                     f"{_number(labelled['macro_f1'])}{_interval(labelled['macro_f1_interval'])}; recall {recall}; "
                     f"{labelled.get('label_share', 0):.1%} of predictions labelled")
        if labelled.get("sampled"):
            sampled = labelled["sampled"]
            lines.append(f"             audit sample: accuracy {_number(sampled['accuracy'])}"
                         f"{_interval(sampled['accuracy_interval'])} on {sampled['labels']} labels")
    elif health.task == "text-classification":
        lines.append("  labelled   no labels in the window: no labelled figures, no accuracy test")
    if health.estimated:
        lines.append(f"  estimated  accuracy {_number(health.estimated['accuracy'])}"
                     f"{_interval(health.estimated.get('interval'))} from {health.estimated['rows']} confidences")
    drift = {name: value for name, value in health.drift.items() if name != "label_share"}
    if drift:
        lines.append("  drift      " + ", ".join(f"{name} {value:.3f}" for name, value in drift.items()))
    for test in health.tests:
        comparison = "<" if test.get("direction") == "below" else ">"
        verdict = "FIRED" if test["fired"] else "ok"
        extra = f", p {test['p_value']:.2g}, {test['labels']} labels, {test['population']}" if "p_value" in test else ""
        lines.append(f"  test       {test['test']}: {test['statistic']:.4f} {comparison} {test['threshold']:.4f}? "
                     f"{verdict} (window of {test['window']['rows']}{extra})")
    lines.extend(f"  note       {note}" for note in health.notes)
    return "\n".join(lines)


def format_status(runs: dict[str, dict[str, Any] | None]) -> str:
    """One line per model: status, since when, the last run's key figures."""
    if not runs:
        return "no models"
    rows = []
    for model, run in sorted(runs.items()):
        if run is None:
            rows.append(f"{model:16} not monitored yet")
            continue
        when = time.strftime("%H:%M:%S", time.localtime(run["time_ms"] / 1000))
        status = run["status"]
        if run.get("episode"):
            since = time.strftime("%H:%M:%S", time.localtime(run["episode"]["opened_ms"] / 1000))
            status = f"DEGRADED since {since} ({', '.join(run['episode']['tests'])})"
        labelled = run.get("labelled") or {}
        accuracy = (f"accuracy {labelled['accuracy']:.3f} (n={labelled['labels']})" if labelled.get("labels")
                    else "no labels")
        estimated = run.get("estimated", {}).get("accuracy")
        rows.append(f"{model:16} {run['version']}  {status}; last run {when}: {run['predictions']} predictions, "
                    f"{accuracy}, estimated {_number(estimated)}, p95 {_number(run['latency'].get('p95_ms'), 1)} ms")
    return "\n".join(rows)
