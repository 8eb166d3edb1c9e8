"""bench.png: side by side, each candidate's p50 speed-up over the PyTorch pipeline at the four shapes, its cold
start (seconds, log scale) and its peak RSS (MB). matplotlib comes with the ``local`` extra; without it there is no
picture, and the run says so."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def chart(document: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter
    except ImportError:
        log.warning("matplotlib is not installed (pip install -e '.[local]'): no bench.png")
        return None
    threads = str(document["settings"]["table_threads"])
    items = document["candidates"]
    names = [item["short"] for item in items]
    shapes = list(document["texts"]["shapes"])
    figure, (speed, cold, memory) = plt.subplots(1, 3, figsize=(17, 5.5), gridspec_kw={"width_ratios": [2, 1, 1]})
    width = 0.8 / len(shapes)
    for index, shape in enumerate(shapes):
        values = [item["ratios"]["by_threads"].get(threads, {}).get(f"speedup_{shape}", 0) for item in items]
        speed.bar([position + index * width for position in range(len(items))], values, width, label=shape)
    speed.axhline(1.0, color="grey", linewidth=0.8)
    speed.set_xticks([position + width * (len(shapes) - 1) / 2 for position in range(len(items))], names, fontsize=8)
    speed.set_ylabel(f"p50 speed-up over the PyTorch pipeline ({threads} threads)")
    speed.legend(title="batch x tokens", fontsize=8)
    colors = [f"C{index}" for index in range(len(items))]
    seconds = [item["cold_start"]["total_s"] for item in items]
    bars = cold.bar(range(len(items)), seconds, color=colors)
    cold.bar_label(bars, [f"{value:.2f} s" for value in seconds], fontsize=7)
    cold.set_yscale("log")
    cold.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    cold.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    cold.yaxis.set_minor_formatter(NullFormatter())
    cold.set_ylabel("cold start to the first answer (s, log scale)")
    peaks = [item["threads"][threads]["peak_rss_mb"] for item in items]
    bars = memory.bar(range(len(items)), peaks, color=colors)
    memory.bar_label(bars, [f"{value:.0f}" for value in peaks], fontsize=7)
    memory.set_ylabel("peak RSS (MB)")
    for axis in (cold, memory):
        axis.set_xticks(range(len(items)), names, fontsize=7)
    model, machine = document["model"], document["machine"]
    figure.suptitle(f"ferry bench: {model['name']} {model['version']} on {machine['model']} "
                    f"(VNNI {'yes' if machine['vnni'] else 'no'}, {machine['cores']} cores)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
