"""The monitor of a running `ferry serve`, from another process: run once, the last run of each model, and the
history drawn as a PNG (matplotlib) — the picture an on-call engineer would rather look at than a table.

The run is the monitor function's own logic (:class:`ferry.runtime.monitor.Monitor`) against the stack's embedded
AWS, its metrics put into the embedded CloudWatch as CloudWatch would extract them from the function's EMF lines.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ferry.local.running import RunningStack
from ferry.runtime.manifest import Manifest, discover_models
from ferry.runtime.monitor import ModelHealth, Monitor, Sources, current_state, emf_documents, history, last_run
from ferry.runtime.settings import Settings

CAPTURE_TABLE, FEEDBACK_TABLE, STATE_TABLE = "CaptureTable", "FeedbackTable", "MonitorStateTable"


def manifests(stack: RunningStack) -> dict[str, Manifest]:
    """The live manifest of every model the stack serves."""
    from ferry.runtime.layout import layer_models_dirs

    return {name: Manifest.load(path) for name, path in discover_models(layer_models_dirs(stack.layers_dir)).items()}


def sources(stack: RunningStack, settings: Settings) -> Sources:
    return Sources(captures=stack.table(CAPTURE_TABLE), state=stack.table(STATE_TABLE),
                   feedback=stack.table(FEEDBACK_TABLE) if FEEDBACK_TABLE in stack.resources else None,
                   events=stack.client("events"), bus=settings.event_bus, cloudwatch=stack.client("cloudwatch"),
                   namespace=settings.metrics_namespace)


def monitor_once(stack: RunningStack, settings: Settings | None = None) -> list[ModelHealth]:
    """One run over every model, its figures published to the stack's CloudWatch (from the same EMF documents
    the function prints) and its events sent to the stack's bus."""
    from ferry.local.logs import emf_metric_data

    settings = settings or Settings.from_env()
    results = Monitor(manifests(stack), sources(stack, settings), settings.monitor_config()).run()
    cloudwatch = stack.client("cloudwatch")
    for document in emf_documents(results, settings.metrics_namespace):
        for namespace, datum in emf_metric_data(json.dumps(document)):
            cloudwatch.put_metric_data(Namespace=namespace, MetricData=[datum])
    return results


def latest_runs(stack: RunningStack) -> dict[str, dict[str, Any] | None]:
    """Each model's last monitor run (None: not monitored yet), with its open episode."""
    table = stack.table(STATE_TABLE)
    found: dict[str, dict[str, Any] | None] = {}
    for name in manifests(stack):
        found[name] = last_run(table, name)
        state = current_state(table, name)
        if found[name] is not None and state is not None:
            found[name]["episode"] = state.get("episode")  # type: ignore[index]
    return found


def draw_report(stack: RunningStack, out: Path, *, model: str | None = None, hours: float = 24.0) -> tuple[Path, int]:
    """Draw `model`'s runs of the last `hours` into `out` (PNG, written to a temporary file then renamed);
    returns the path and the number of runs drawn (0: nothing written)."""
    names = sorted(manifests(stack))
    model = model or (names[0] if names else None)
    if model is None:
        return out, 0
    runs = history(stack.table(STATE_TABLE), model, since_ms=int((time.time() - hours * 3600) * 1000))
    if not runs:
        return out, 0
    draw(runs, out, title=f"{model}: the monitor's last {hours:g} hours")
    return out, len(runs)


def _series(runs: list[dict[str, Any]], path: tuple[str, ...]) -> list[float | None]:
    """One figure of every run (None where a run has none)."""
    values: list[float | None] = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        values.append(value if isinstance(value, int | float) and not isinstance(value, bool) else None)
    return values


def _plot(axis: Any, times: list[Any], values: list[float | None], label: str, **style: Any) -> None:
    points = [(t, v) for t, v in zip(times, values, strict=True) if v is not None]
    if points:
        axis.plot([t for t, _ in points], [v for _, v in points], marker="o", markersize=3, label=label, **style)


def _plot_tests(axis: Any, runs: list[dict[str, Any]], times: list[Any], test: str, label: str, color: str, *,
                statistic: bool = True) -> None:
    """Each tested window of `test` at the time of its run: its statistic as a hollow marker (statistic=True) and its
    threshold as a dashed step."""
    points = [(t, entry) for t, run in zip(times, runs, strict=True) for entry in run.get("tests", [])
              if entry["test"] == test]
    if not points:
        return
    if statistic:
        axis.plot([t for t, _ in points], [e["statistic"] for _, e in points], linestyle="none", marker="D",
                  markersize=5, markerfacecolor="none", color=color, label=label)
    axis.step([t for t, _ in points], [e["threshold"] for _, e in points], where="post", linestyle="--",
              color=color, alpha=0.6, label=f"{test.replace('_', ' ')} threshold" if statistic else label)


def _mark_firings(runs: list[dict[str, Any]], times: list[Any], panels: dict[str, Any], default: Any) -> bool:
    """A red line where each test fired, on the panel of its statistic; whether any did."""
    fired = False
    for time_point, run in zip(times, runs, strict=True):
        for firing in run.get("firings", []):
            axis = panels.get(firing["test"], default)
            axis.axvline(time_point, color="red", alpha=0.5, linewidth=1)
            axis.annotate(firing["test"], (time_point, axis.get_ylim()[1]), color="red", fontsize=7, rotation=90,
                          va="top", ha="right")
            fired = True
    return fired


def draw(runs: list[dict[str, Any]], out: Path, *, title: str) -> None:
    """Three panels over time: accuracy (labelled, with its interval) and estimated accuracy; the drift statistics;
    predictions and labels. Every test that fired is a red mark on the panel of its statistic."""
    from datetime import UTC, datetime

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.dates import DateFormatter

    times = [datetime.fromtimestamp(run["time_ms"] / 1000, tz=UTC) for run in runs]
    figure, (top, middle, bottom) = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
    figure.suptitle(title)
    _plot(top, times, _series(runs, ("labelled", "accuracy")), "accuracy (labelled)", color="tab:blue")
    band = [(t, run["labelled"]["accuracy_interval"]) for t, run in zip(times, runs, strict=True)
            if (run.get("labelled") or {}).get("accuracy_interval")]
    if band:
        top.fill_between([t for t, _ in band], [b[0] for _, b in band], [b[1] for _, b in band], color="tab:blue",
                         alpha=0.15, label="95% interval")
    _plot(top, times, _series(runs, ("estimated", "accuracy")), "estimated accuracy (confidences)", color="tab:green")
    _plot_tests(top, runs, times, "accuracy", "tested window's accuracy (test)", "tab:blue")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1.02)
    for name, color in (("confidence_psi", "tab:orange"), ("token_length_psi", "tab:purple"),
                        ("label_mix_js", "tab:brown")):
        _plot(middle, times, _series(runs, ("drift", name)), name.replace("_", " "), color=color)
    _plot_tests(middle, runs, times, "confidence_psi", "confidence PSI threshold", "tab:orange", statistic=False)
    middle.set_ylabel("drift statistic (per tested window)")
    _plot(bottom, times, _series(runs, ("predictions",)), "predictions in the window", color="tab:gray")
    _plot(bottom, times, _series(runs, ("labelled", "labels")), "labels in the window", color="tab:blue")
    bottom.set_ylabel("count")
    if _mark_firings(runs, times, {"accuracy": top, "estimated_accuracy": top}, middle):
        top.plot([], [], color="red", label="a test fired")
    for axis in (top, middle, bottom):
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(loc="lower left", fontsize=8)
    bottom.xaxis.set_major_formatter(DateFormatter("%H:%M:%S"))
    bottom.set_xlabel("time (UTC)")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.tmp.png")
    figure.savefig(temporary, dpi=110)
    plt.close(figure)
    temporary.replace(out)
