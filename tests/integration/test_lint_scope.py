"""Every Python file the project tracks is linted: ruff's default excludes skip any folder named `build` (the
offline package was called that, and none of its modules was checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import ROOT


def test_ruff_checks_every_tracked_python_file():
    # the working tree's: tracked files not deleted since, and new ones git does not ignore
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"], cwd=ROOT,
                             capture_output=True, text=True, check=True)
    ruff = Path(sys.executable).parent / "ruff"
    shown = subprocess.run([str(ruff), "check", "--show-files", "."], cwd=ROOT, capture_output=True, text=True,
                           check=False)
    linted = {Path(line.strip()).resolve() for line in shown.stdout.splitlines() if line.strip().endswith(".py")}
    expected = {(ROOT / name).resolve() for name in tracked.stdout.split() if (ROOT / name).is_file()}
    assert expected, "git lists no Python files"
    assert not expected - linted, sorted(str(path.relative_to(ROOT)) for path in expected - linted)
