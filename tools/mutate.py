"""`make mutate`: mutation testing of Ferry's contracts with mutmut, and the kill rate it reaches.

``python tools/mutate.py run`` starts from an empty ``mutants/`` and runs ``mutmut run`` over the modules of
``[tool.mutmut] only_mutate`` (pyproject.toml) with the unit tests of ``pytest_add_cli_args_test_selection``, then
reports. ``python tools/mutate.py rerun`` keeps the last run's verdicts and runs what is not judged yet, then every
mutant not detected again (or the mutants named): quick, for a loop of writing tests, but mutmut maps tests to the
functions they reach only when it first sees a test, so a test changed since keeps its old reach; ``run`` is the
figure of record. ``python tools/mutate.py report`` reports on the last run without running anything.

The report gives, per module and overall: mutants, killed, timeouts, survivors, suspicious ones and those no test
reached, and the kill rate, which is (killed + timeout) / mutants: a mutant that makes the tests run past their
time was detected too. Every mutant not detected is listed with the lines it changes. The command fails when the
rate is under ``--min`` (90 %). See docs/mutation.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"
DETECTED = ("killed", "timeout")
COLUMNS = ("killed", "timeout", "survived", "suspicious", "no tests", "not checked")


def modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mutmut"]
    return [str(path) for path in config["only_mutate"]]


def status_of(code: int | None) -> str:
    from mutmut.stats import status_by_exit_code  # the meaning of mutmut's own exit codes

    return str(status_by_exit_code[code])


@dataclass
class ModuleResult:
    path: str
    codes: dict[str, int | None] = field(default_factory=dict)  # mutant name -> mutmut's exit code

    @property
    def statuses(self) -> dict[str, str]:
        return {name: status_of(code) for name, code in self.codes.items()}

    @property
    def counts(self) -> Counter[str]:
        return Counter(self.statuses.values())

    @property
    def total(self) -> int:
        return len(self.codes)

    @property
    def detected(self) -> int:
        return sum(self.counts[status] for status in DETECTED)

    @property
    def undetected(self) -> list[str]:
        return sorted((name for name, status in self.statuses.items() if status not in DETECTED), key=_natural)


def _natural(name: str) -> tuple[str, int]:
    stem, _, number = name.rpartition("__mutmut_")
    return stem, int(number) if number.isdigit() else 0


def read_results() -> list[ModuleResult]:
    results = []
    for path in modules():
        meta = MUTANTS / (path + ".meta")
        if not meta.is_file():
            raise SystemExit(f"mutate: no results for {path} ({meta.relative_to(ROOT)} is missing): run `make mutate`")
        results.append(ModuleResult(path, json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]))
    return results


def rate(detected: int, total: int) -> float:
    return 100.0 * detected / total if total else 100.0


def table(results: list[ModuleResult]) -> str:
    rows = [f"| module | mutants | {' | '.join(COLUMNS)} | kill rate |", "|---" * (len(COLUMNS) + 3) + "|"]
    totals: Counter[str] = Counter()
    for result in results:
        counts = result.counts
        totals.update(counts)
        cells = " | ".join(str(counts[column]) for column in COLUMNS)
        rows.append(f"| {result.path.removeprefix('src/ferry/')} | {result.total} | {cells} | "
                    f"{rate(result.detected, result.total):.1f} % |")
    total = sum(result.total for result in results)
    detected = sum(result.detected for result in results)
    cells = " | ".join(str(totals[column]) for column in COLUMNS)
    rows.append(f"| **all** | {total} | {cells} | **{rate(detected, total):.1f} %** |")
    return "\n".join(rows)


def changed_lines(path: str, name: str) -> list[str]:
    """The lines a mutant changes: ``-`` the original's, ``+`` the mutant's."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    try:
        diff = get_diff_for_mutant(name, path=path)
    except Exception as error:  # the report still lists the mutant
        return [f"? (no diff: {error.__class__.__name__})"]
    return [f"{line[0]} {line[1:].strip()}" for line in diff.splitlines()
            if line[:1] in "+-" and line[:3] not in ("+++", "---")]


def survivors(results: list[ModuleResult]) -> str:
    lines = []
    for result in results:
        names = result.undetected
        if not names:
            continue
        lines.append(f"\n{result.path}: {len(names)} not detected")
        for name in names:
            lines.append(f"  {name.rpartition('.')[2]}  [{result.statuses[name]}]")
            lines.extend(f"      {line}" for line in changed_lines(result.path, name))
    return "\n".join(lines)


def report(minimum: float, *, wall_s: float | None = None) -> int:
    os.chdir(ROOT)  # mutmut's helpers read mutants/ relative to the working folder
    results = read_results()
    total = sum(result.total for result in results)
    detected = sum(result.detected for result in results)
    overall = rate(detected, total)
    print(table(results))
    print(survivors(results) or "\nevery mutant was detected")
    print(f"\nkill rate {overall:.1f} % ({detected} of {total} mutants killed or timed out)"
          + (f"; mutmut ran for {wall_s:.0f} s" if wall_s is not None else ""))
    if overall < minimum:
        print(f"mutate: the kill rate is under {minimum:g} %: kill the survivors with tests, or list the equivalent "
              "ones in docs/mutation.md", file=sys.stderr)
        return 1
    return 0


def mutmut(max_children: int, names: list[str]) -> int:
    # The console script beside this interpreter: the .venv's mutmut, whatever is on PATH.
    command = [str(Path(sys.executable).parent / "mutmut"), "run", "--max-children", str(max_children), *names]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    code = subprocess.run(command, cwd=ROOT, env=env, check=False).returncode
    print()
    if code != 0:
        print(f"mutate: `mutmut run` failed (exit {code})", file=sys.stderr)
    return code


def run(max_children: int, minimum: float, *, fresh: bool, names: list[str]) -> int:
    """`fresh`: every mutant, from an empty mutants/. Else every mutant not yet judged, then the named ones, or else
    every one not detected, again."""
    if fresh:
        shutil.rmtree(MUTANTS, ignore_errors=True)
    start = time.monotonic()
    code = mutmut(max_children, [])
    if code == 0:
        os.chdir(ROOT)
        retry = names or [name for result in read_results() for name in result.undetected]
        if retry and not fresh:
            code = mutmut(max_children, retry)
    wall_s = time.monotonic() - start
    return code or report(minimum, wall_s=wall_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("command", choices=("run", "rerun", "report"))
    parser.add_argument("mutants", nargs="*", help="rerun: these mutants (names or globs) rather than the survivors")
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once")
    parser.add_argument("--min", type=float, default=90.0, help="the lowest kill rate that passes, in percent")
    args = parser.parse_args(argv)
    if args.command == "report":
        return report(args.min)
    return run(args.max_children, args.min, fresh=args.command == "run", names=args.mutants)


if __name__ == "__main__":
    sys.exit(main())
