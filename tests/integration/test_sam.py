"""template.yaml through SAM CLI: `sam validate --lint` and `sam build` (tests/integration/test_deploy.py: what
CloudFormation's transform deploys)."""

from __future__ import annotations

import os
import subprocess

import pytest

from helpers import ROOT

SAM = ROOT / ".venv-sam" / "bin" / "sam"
SAM_ENV = {**os.environ, "SAM_CLI_TELEMETRY": "0"}


def test_sam_validate_lint():
    assert SAM.exists(), "aws-sam-cli is installed by `make test` into .venv-sam"
    command = [str(SAM), "validate", "--lint", "--region", "us-east-1", "-t", str(ROOT / "template.yaml")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=SAM_ENV, check=False)
    assert result.returncode == 0 and "is a valid SAM Template" in result.stdout + result.stderr, result.stderr


def python312() -> str | None:
    """Why no python3.12 runs here (None when one does). A name on PATH is not enough: pyenv's shim is there, and
    exits 127 for a version it has not selected."""
    try:
        probe = subprocess.run(["python3.12", "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                               text=True, timeout=60, env=SAM_ENV, check=False)
    except OSError as error:
        return f"no python3.12 on PATH ({error.strerror})"
    if probe.returncode != 0 or probe.stdout.strip() != "(3, 12)":
        said = (probe.stderr or probe.stdout).strip().splitlines()[:1]
        return f"python3.12 on PATH does not run (exit {probe.returncode}{': ' + said[0] if said else ''})"
    return None


def test_sam_build_packages_every_function(tmp_path):
    import shutil

    assert SAM.exists(), "aws-sam-cli is installed by `make test` into .venv-sam"
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "template.yaml", project / "template.yaml")
    shutil.copytree(ROOT / "functions", project / "functions")
    for layer in ("build/layers/runtime-x86_64/python", "build/layers/runtime-arm64/python",
                  "layers/model/sentiment/models/sentiment",
                  "layers/model/minilm/models/minilm"):  # stand-ins: sam build only references layer folders
        (project / layer).mkdir(parents=True)
        (project / layer / "README").write_text("fixture\n")
    result = subprocess.run([str(SAM), "build", "--build-dir", str(project / ".aws-sam" / "build")], cwd=project,
                            capture_output=True, text=True, timeout=300, env=SAM_ENV, check=False)
    said = result.stdout[-2000:] + result.stderr[-2000:]
    # A function with a requirements.txt makes sam build validate Lambda's python3.12 on PATH (none has one now:
    # their code is copied as it is). Where none runs, that is this machine's lack, not the template's fault.
    missing = python312() if result.returncode != 0 else None
    if missing:
        pytest.skip(f"sam build failed, and it needs a python3.12 that runs: {missing} (`make test` puts one on "
                    f"PATH when it finds one, on PATH or in pyenv). sam build said: {said[-300:]}")
    assert result.returncode == 0, said
    built = project / ".aws-sam" / "build"
    for function in ("PredictFunction", "CaptureFunction", "BatchFunction", "AuthorizerFunction", "GenerateFunction"):
        assert (built / function / "app.py").is_file()
