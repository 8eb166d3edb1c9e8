"""Promotion and rollback of registered versions: through a canary to live, or back to the version before.

The registry says which version is live; the target serves it. Each change writes the registry first (one
transaction: at most one live and one canary), then makes the target agree, so that a process killed in between
leaves the registry right and a rerun (of the update, or of the command) brings what serves into line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from ferry.runtime import layout
from ferry.runtime.canary import CanaryVerdict, Estimate, Traffic, judge
from ferry.runtime.registry import Entry, RegistryError
from ferry.update.exceptions import UpdateError

if TYPE_CHECKING:
    from ferry.update.steps import Update


class Promotions:
    """Promote and roll back the versions of `update`'s model, on its target, with its registry and settings."""

    def __init__(self, update: Update):
        self.update = update
        self.model = update.model
        self.registry = update.registry
        self.target = update.target

    def promote(self, version: str, *, by: str, why: str, force: bool = False) -> dict[str, Any]:
        """Canary, then live (or rolled back); `force` promotes a version the gate did not bless, and the
        registry says so."""
        entry = self.registry.get(self.model, version)
        if entry is None:
            raise RegistryError(f"{self.model} {version}: no such version (ferry models history {self.model})")
        return self.canary_then_live(entry, by=by, why=why, force=force)

    def canary_then_live(self, entry: Entry, *, by: str, why: str, force: bool = False) -> dict[str, Any]:
        version, layer = entry.version, self.layer_of(entry)
        if entry.status == "live":  # the registry says live: make what serves agree
            self.target.go_live(self.model, layer)
            return {"why": f"{version} live", "version": version}
        if entry.status != "canary":
            self.registry.start_canary(self.model, version, by=by, why=why, force=force)
        self.target.start_canary(self.model, layer, self.update.config.canary_weight)
        verdict = self.bake(entry)
        if not verdict.passed:
            self.target.stop_canary(self.model)
            self.registry.rollback(self.model, by="canary", why=verdict.why)
            self.target.notify("ModelRolledBack", {"model": self.model, "version": version, "why": verdict.why,
                                                   "figures": verdict.figures})
            return {"stop": "rolled-back", "why": verdict.why, "version": version, "canary": verdict.figures}
        self.registry.go_live(self.model, version, by="canary", why=verdict.why, force=force)
        self.target.go_live(self.model, layer)
        self.target.notify("ModelUpdated", {"model": self.model, "version": version, "why": verdict.why})
        return {"why": verdict.why, "version": version, "canary": verdict.figures}

    def rollback(self, *, by: str, why: str) -> dict[str, Any]:
        """A canary ends (the live version stays); without one, the live version goes and the one before it
        serves again."""
        rolled, live = self.registry.rollback(self.model, by=by, why=why)
        self.target.stop_canary(self.model)
        if live is not None:
            self.target.go_live(self.model, self.layer_of(live))
        self.target.notify("ModelRolledBack", {"model": self.model, "version": rolled.version, "why": why,
                                               "live": None if live is None else live.version})
        return {"rolled_back": rolled.version, "live": None if live is None else live.version, "why": why}

    def bake(self, entry: Entry) -> CanaryVerdict:
        """Watch the canary until its time is up; the first alarm ends it at once."""
        config, clock = self.update.config, self.update.clock
        started = clock()
        deadline = started + config.canary_seconds
        calibrations = self.calibrations({"primary": self.registry.live(self.model), "canary": entry})
        while True:
            self.update.sleep(config.poll_seconds)
            traffic = self.target.traffic()
            estimates = self.estimates(calibrations, started)
            verdict = judge(traffic.get("primary", Traffic()), traffic.get("canary", Traffic()),
                            min_requests=config.canary_min_requests, final=clock() >= deadline, estimates=estimates)
            if verdict.final:
                self.update.progress(f"canary: {verdict.why}")
                return verdict

    def calibrations(self, sides: dict[str, Entry | None]) -> dict[str, tuple[str, Any]]:
        """Each side's version and the calibration its manifest records (confidence -> P(correct)), read once; a
        version without one (or whose layer is gone) gets no estimate, and the other figures still judge it."""
        from ferry.runtime import stats
        from ferry.runtime.manifest import Manifest

        found: dict[str, tuple[str, Any]] = {}
        for side, entry in sides.items():
            if entry is None:
                continue
            try:
                manifest = Manifest.load(layout.model_dir_in_layer(self.layer_of(entry), self.model))
            except Exception:  # a version whose layer is gone: no estimate
                continue
            calibration = manifest.reference.calibration if manifest.reference is not None else None
            if calibration:
                found[side] = (entry.version, stats.Calibration.from_dict(calibration))
        return found

    def estimates(self, calibrations: dict[str, tuple[str, Any]], since: float) -> dict[str, Estimate]:
        """Each version's estimated accuracy over the predictions it captured since `since` (label-free: its
        calibration over the captured confidences)."""
        from ferry.runtime import stats
        from ferry.runtime.monitor import query_range

        found: dict[str, Estimate] = {}
        for side, (version, calibration) in calibrations.items():
            rows = query_range(self.update.tables.captures, f"{self.model}#{version}", int(since * 1000),
                               int(self.update.clock() * 1000) + 1)
            confidences = [float(row["confidence"]) for row in rows if row.get("confidence") is not None]
            if confidences:
                found[side] = Estimate(stats.estimated_accuracy(calibration, confidences), len(confidences))
        return found

    def layer_of(self, entry: Entry) -> Path:
        return layer_path(entry)


def layer_path(entry: Entry) -> Path:
    """The layer folder the registry keeps for a version."""
    path = artifact_path(entry.artifacts.get("layer"))
    if path is None:
        raise UpdateError(f"{entry.model} {entry.version}: the registry keeps no layer for it")
    return path


def artifact_path(uri: str | None) -> Path | None:
    """Where a registry artifact lies on this machine (a file: URI; S3 ones are the cloud's), or None."""
    if not uri:
        return None
    parts = urlsplit(uri)
    if parts.scheme not in ("file", ""):
        raise UpdateError(f"{uri}: only file artifacts are read locally")
    return Path(unquote(parts.path))
