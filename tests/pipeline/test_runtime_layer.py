"""layers/runtime/build.sh builds the runtime layer for the architecture asked for (the template's Architecture
parameter picks the layer of that name): native code of that machine, ferry.runtime inside, under Lambda's limit."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import ROOT

ELF_MACHINE = {"x86_64": 62, "arm64": 183}  # e_machine: EM_X86_64, EM_AARCH64


def _elf_machine(path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", path
    return int.from_bytes(header[18:20], "little")


@pytest.mark.parametrize("arch", sorted(ELF_MACHINE))
def test_runtime_layer_holds_native_code_of_its_architecture(arch, tmp_path):
    out = tmp_path / f"runtime-{arch}"
    result = subprocess.run(["bash", str(ROOT / "layers" / "runtime" / "build.sh"), arch, str(out)],
                            env={"VENV_PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    python = out / "python"
    extensions = list((python / "onnxruntime" / "capi").glob("onnxruntime_pybind11_state*.so"))
    assert len(extensions) == 1 and "cpython-312" in extensions[0].name
    machine = {_elf_machine(path) for path in [*extensions, *python.glob("tokenizers/*.so")]}
    assert machine == {ELF_MACHINE[arch]}
    assert (python / "ferry" / "runtime" / "predictor.py").is_file()
    assert not list(python.glob("torch*")) and not list(python.glob("transformers*"))
    size = sum(path.stat().st_size for path in out.rglob("*") if path.is_file())
    assert size < 200_000_000, size  # leaves room for the model layers under 250 MB
