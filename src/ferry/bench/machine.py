"""The machine a run measured on, stated with every run: the CPU (model, whether it has VNNI and AMX, which int8
speed depends on), its cores, the load when the run began, and the versions of Python and the libraries timed.

Nothing is imported to find a version (importing torch takes seconds): the installed distributions say."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")
PACKAGES = ("onnxruntime", "tokenizers", "numpy", "torch", "transformers", "optimum", "optimum-onnx")


def cpu_facts(cpuinfo: str | None = None) -> dict[str, Any]:
    """The CPU's model name and int8-relevant flags, from /proc/cpuinfo (or the text given)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    return {
        "model": fields.get("model name") or platform.processor() or platform.machine(),
        "flags": [flag for flag in INT8_FLAGS if flag in flags],
        "vnni": bool(flags & {"avx512_vnni", "avx_vnni"}),
        "amx": "amx_int8" in flags,
    }


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def describe_machine() -> dict[str, Any]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {**cpu_facts(), "arch": platform.machine(), "cores": usable, "os": platform.platform(),
            "load_average_at_start": load, "versions": versions(), "python_executable": sys.executable}


def cpu_line(machine: dict[str, Any]) -> str:
    """One line for the reports: model, VNNI and AMX, cores, versions."""
    v = machine["versions"]
    return (f"{machine['model']} ({machine['arch']}, {machine['cores']} cores); "
            f"VNNI {'yes' if machine['vnni'] else 'no'}, AMX {'yes' if machine['amx'] else 'no'}; "
            f"python {v['python']}, onnxruntime {v['onnxruntime']}, "
            f"torch {v['torch']}, transformers {v['transformers']}, optimum-onnx {v['optimum-onnx']}")
