"""A run's parent version and what comes of the run: published, gated, or skipped as unchanged.

The parent is the published version a run warm-starts from and is judged against (`training.init_from`):
`latest` — the version `OUT/<dataset>/latest` points at, none before the first publish —, a version named
explicitly, or `none` for a cold run with no parent at all. A run whose input fingerprint
(hyperlearn.pipeline.fingerprint) equals its parent's, or that of the newest version (which the gate may have
kept from `latest`), is skipped: nothing is trained and no version is made. `--force` trains anyway; so does
`init_from: none`, which has no parent to equal. Torch-free.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

from hyperlearn.pipeline.fingerprint import InputFingerprint
from hyperlearn.rundir import CATALOG, LATEST, DatasetDir, RunDir

Status = Literal["published", "gated", "skipped"]


@dataclass(frozen=True)
class RunOutcome:
    """What a run of the flow did, for its caller and for the events a schedule emits.

    `status`: "published" (a new version, `latest` moved to it), "gated" (a new version, kept, `latest` left on
    the parent: `gate` says why) or "skipped" (inputs unchanged: no version; `path` is the version they match).
    `path`: the version folder; `parent`: the parent's version name (None: a cold run); `gate`: the gate's
    decision (GateOutcome.to_dict()) or None; `reason`: one line for logs and the command's output."""

    status: Status
    dataset: str
    version: str
    path: str
    parent: str | None
    gate: dict[str, Any] | None
    reason: str

    @property
    def latest_moved(self) -> bool:
        return self.status == "published"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "latest_moved": self.latest_moved}


def published_versions(dataset: DatasetDir) -> list[str]:
    """The dataset's published version names, oldest first (names sort chronologically)."""
    if not dataset.path.is_dir():
        return []
    return sorted(
        p.name for p in dataset.path.iterdir()
        if p.is_dir() and not p.is_symlink() and not p.name.startswith(".") and p.name not in (CATALOG, LATEST)
    )


def parent_version(dataset: DatasetDir, init_from: str) -> RunDir | None:
    """The version a run with `init_from` starts from: None for "none", and for "latest" before anything was
    published; a named version that does not exist is an error naming the versions there are."""
    if init_from == "none":
        return None
    if init_from == "latest":
        return RunDir(dataset.latest.resolve()) if dataset.latest.is_symlink() else None
    versions = published_versions(dataset)
    if init_from not in versions:
        raise FileNotFoundError(
            f"init_from: no version {init_from!r} in {dataset.path}; published: {', '.join(versions) or 'none'}"
        )
    return dataset.version(init_from)


def recorded_inputs(version: RunDir) -> InputFingerprint | None:
    """The input fingerprint a version's manifest records, None for versions made before it was recorded."""
    inputs = read_json(version.manifest).get("inputs")
    return None if inputs is None else InputFingerprint.from_dict(inputs)


def recorded_metrics(version: RunDir) -> dict[str, float | None]:
    """A version's metrics (metrics.json `metrics`: test, and the best round's validation metrics)."""
    return dict(read_json(version.metrics).get("metrics", {}))


def unchanged_since(
    dataset: DatasetDir, parent: RunDir | None, inputs: InputFingerprint
) -> RunDir | None:
    """The version whose recorded inputs equal `inputs` — the parent, or else the newest version — or None
    when the run has work to do (no parent: a cold run is never skipped)."""
    if parent is None:
        return None
    versions = published_versions(dataset)
    candidates = [parent] + ([dataset.version(versions[-1])] if versions else [])
    for version in candidates:
        if recorded_inputs(version) == inputs:
            return version
    return None


def read_json(path) -> dict[str, Any]:
    """A JSON file of a version, {} when it is missing (a version from before the file existed)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
