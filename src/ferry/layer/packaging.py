"""The Lambda layer: a folder SAM zips, which unpacks to /opt/models/<name>/; its manifest; its size check.

Where each file sits is :mod:`ferry.runtime.layout`'s to say; this module writes and measures what is there.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferry.layer.config import BuildEnvironment
from ferry.layer.exceptions import BuildError, SizeLimitError
from ferry.runtime import layout
from ferry.runtime.constants import MANIFEST_FILE
from ferry.runtime.manifest import Bins, FileEntry, Manifest, sha256_file

MB = 1_000_000
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024  # function code and every layer together, unzipped
LAMBDA_MAX_LAYERS = 5
# The AWS-managed Powertools layer (python3.12): measured 18.7 MB for aws-lambda-powertools[parser,tracer] and
# its dependencies without the AWS SDK; the managed layer carries a few more extras, so budget 25 MB.
POWERTOOLS_LAYER_BYTES = 25 * MB
RUNTIME_DISTRIBUTIONS = ("onnxruntime", "tokenizers", "numpy")
FUNCTION_CODE_BYTES = 1 * MB  # a handler's own app.py and what it carries, generously


def tree_size(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file() and not item.is_symlink())


def file_entries(model_dir: Path) -> dict[str, FileEntry]:
    """Every file of the model folder but the manifest, hashed: what the manifest's ``files`` records."""
    return {
        item.relative_to(model_dir).as_posix(): FileEntry(sha256=sha256_file(item), size=item.stat().st_size)
        for item in sorted(model_dir.rglob("*"))
        if item.is_file() and item.name != MANIFEST_FILE
    }


def quantile_bins(values: Sequence[float], bins: int = 10) -> Bins:
    """Quantile bin edges and the count in each bin, for drift checks against live traffic later."""
    array = np.asarray(values, dtype=np.float64)
    # observed values as edges (no interpolation): the first is the minimum and the last the maximum, exactly
    edges = np.unique(np.quantile(array, np.linspace(0.0, 1.0, bins + 1), method="inverted_cdf"))
    if len(edges) < 2:
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    counts, _ = np.histogram(array, bins=edges)
    return Bins(
        edges=tuple(float(edge) for edge in edges),
        counts=tuple(int(count) for count in counts),
        n=len(array),
        mean=round(float(array.mean()), 6),
    )


def write_json_atomic(path: Path, data: Any) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    temporary.replace(path)


def write_manifest(model_dir: Path, manifest: Manifest) -> None:
    """Write the manifest of a model folder, whole or not at all (a reader never sees half of one).

    What is written is first read back as the runtime will read it: a build never writes a manifest that the
    runtime would refuse.
    """
    path = layout.manifest_path(model_dir)
    data = manifest.to_dict()
    Manifest.from_dict(json.loads(json.dumps(data)), source=f"{path} (as written)")
    write_json_atomic(path, data)


def install_folder(staged: Path, target: Path) -> None:
    """Move a complete staged folder into place; an older one of the same name is replaced, never mixed."""
    if target.exists():
        retired = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.replace(retired)
        staged.replace(target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staged.replace(target)


# --- size check -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SizedPart:
    what: str
    bytes: int
    measured: bool  # False when the figure is an estimate or a budget


def runtime_layer_part(runtime_layer: Path | None) -> SizedPart:
    """The runtime layer: measured when built, else the installed onnxruntime, tokenizers and numpy."""
    if runtime_layer is not None:
        if not runtime_layer.is_dir():
            raise BuildError(f"{runtime_layer}: no such folder", field="runtime_layer")
        return SizedPart("runtime layer", tree_size(runtime_layer), measured=True)
    total = 0
    for name in RUNTIME_DISTRIBUTIONS:
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        for file in distribution.files or ():
            located = Path(str(distribution.locate_file(file)))
            if located.is_file() and "__pycache__" not in located.parts:
                total += located.stat().st_size
    runtime_source = Path(__file__).resolve().parent.parent / "runtime"
    total += sum(p.stat().st_size for p in runtime_source.glob("*.py"))
    return SizedPart("runtime layer (onnxruntime, tokenizers, numpy, ferry.runtime)", total, measured=False)


def powertools_part(environment: BuildEnvironment) -> SizedPart:
    """The AWS-managed Powertools layer: as measured (``FERRY_POWERTOOLS_LAYER_MB``), else a budget."""
    if environment.powertools_layer_mb is not None:
        return SizedPart("Powertools layer", int(environment.powertools_layer_mb * MB), measured=True)
    return SizedPart("Powertools layer (AWS-managed, budget)", POWERTOOLS_LAYER_BYTES, measured=False)


def model_layer_parts(out: Path, new_name: str, new_layer: Path, exclude: Iterable[Path] = ()) -> list[SizedPart]:
    """Every model layer the function will carry: the new one and the others already in ``out``."""
    skip = {path.resolve() for path in exclude}
    parts = [SizedPart(f"model layer {new_name} (new)", tree_size(new_layer), measured=True)]
    if out.is_dir():
        for other in sorted(out.iterdir()):
            if layout.is_hidden(other) or other.name == new_name or other.resolve() in skip:
                continue
            if other.is_dir() and layout.is_layer_dir(other):
                parts.append(SizedPart(f"model layer {other.name}", tree_size(other), measured=True))
    return parts


def check_function_size(parts: Sequence[SizedPart], limit: int = LAMBDA_UNZIPPED_LIMIT) -> int:
    """Raise SizeLimitError, with every part's size, when the function and its layers exceed Lambda's limits."""
    total = FUNCTION_CODE_BYTES + sum(part.bytes for part in parts)
    layers = len(parts)
    table = "\n".join(f"  {part.bytes / MB:9.1f} MB  {part.what}" for part in parts)
    if total > limit:
        raise SizeLimitError(
            f"the function would carry {total / MB:.1f} MB unzipped, over Lambda's limit of {limit / MB:.1f} MB "
            f"(function code and all layers):\n{table}\n  {FUNCTION_CODE_BYTES / MB:9.1f} MB  function code\n"
            "Serve fewer models per function, or move the largest model to a SageMaker endpoint."
        )
    if layers > LAMBDA_MAX_LAYERS:
        raise SizeLimitError(
            f"the function would carry {layers} layers; Lambda allows {LAMBDA_MAX_LAYERS}:\n{table}"
        )
    return total


# --- fresh-process load time ----------------------------------------------------------------------------

_LOAD_PROBE = """
import json, sys, time
started = time.perf_counter()
from ferry.runtime import Predictor
imported = time.perf_counter()
predictor = Predictor.load(sys.argv[1])
loaded = time.perf_counter()
batch = predictor.encode(["a short text to warm the session"])
predictor.forward(batch)
predicted = time.perf_counter()
heavy = sorted(m for m in ("torch", "transformers", "optimum") if m in sys.modules)
print(json.dumps({"import_s": imported - started, "load_s": loaded - imported,
                  "first_prediction_s": predicted - loaded, "heavy_modules": heavy}))
"""


def measure_fresh_load(model_dir: Path) -> dict[str, Any]:
    """Import the runtime, load the model and predict once in a new interpreter; the times of each step."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    completed = subprocess.run(
        [sys.executable, "-c", _LOAD_PROBE, str(model_dir)],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )
    if completed.returncode != 0:
        tail = completed.stderr.strip().splitlines()[-3:]
        raise BuildError(f"the built layer does not load in a fresh process: {' | '.join(tail)}")
    figures: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    figures["import_and_load_s"] = figures["import_s"] + figures["load_s"]
    return figures
