"""Which staging folder a run may resume: the one a killed run of the same spec, settings and data left.

A run records, once its data are prepared, a resume key in its staging folder (`RunDir.resume_record`) with the
ingest and graph summaries. The key covers everything the staged files depend on: the spec's content, the
training settings, the mode, every source file (path, size, modification time), and the state of the dataset
(the version `latest` names and the persistent catalog files). A later run with the same key, holding the
dataset's lock, carries on in that folder from its last checkpoint instead of starting again; anything else —
other settings, edited data, a version published in between — makes the folder stale, and it is removed.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hyperlearn.pipeline.spec import DatasetSpec, SourceSpec
from hyperlearn.rundir import STAGING_PREFIX, DatasetDir, RunDir


def resume_key(spec: DatasetSpec, mode: str, dataset: DatasetDir) -> str:
    """The SHA-256 of what a staged run depends on (module docstring)."""
    latest = os.readlink(dataset.latest) if dataset.latest.is_symlink() else None
    catalog = sorted(dataset.catalog.glob("*")) if dataset.catalog.is_dir() else []
    document = {
        "spec": spec.spec_hash,
        "training": spec.training.config_hash(),
        "mode": mode,
        "sources": sorted({_fingerprint(path) for source in _sources(spec) for path in _files(source.path)}),
        "latest": latest,
        "catalog": [_fingerprint(path) for path in catalog],
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def write_resume_record(run: RunDir, key: str, ingest: dict[str, Any], graphs: dict[str, Any]) -> None:
    """Record that `run`'s data are prepared, for the run of `key`, with the summaries its manifest needs."""
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    temporary = run.resume_record.with_name(f".{run.resume_record.name}.tmp")
    temporary.write_text(json.dumps({"key": key, "ingest": ingest, "graphs": graphs}))
    os.replace(temporary, run.resume_record)


def read_resume_record(run: RunDir) -> dict[str, Any] | None:
    """The record `write_resume_record` left, or None (none yet, or unreadable: a folder not to resume)."""
    try:
        return json.loads(run.resume_record.read_text())
    except (OSError, ValueError):
        return None


def is_resumable(run: RunDir, key: str) -> bool:
    """Whether `run` is a staging folder of the run of `key` whose data were prepared."""
    record = read_resume_record(run)
    return record is not None and record.get("key") == key


def staging_version(run: RunDir) -> str:
    """The version a staging folder was made for (`DatasetDir.staging` in reverse)."""
    name = run.path.name
    if not name.startswith(STAGING_PREFIX):
        raise ValueError(f"{run.path} is not a staging folder")
    return name[len(STAGING_PREFIX):]


def _sources(value: Any) -> Iterator[SourceSpec]:
    """Every data source a spec reads, wherever in it the source is named."""
    if isinstance(value, SourceSpec):
        yield value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            yield from _sources(getattr(value, field.name))
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _sources(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _sources(item)


def _files(path: Path) -> list[Path]:
    """The files a source path names: itself, the files under a folder, or a glob's matches."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    if path.exists():
        return [path]
    return sorted(Path(match) for match in glob.glob(str(path), recursive=True))


def _fingerprint(path: Path) -> tuple[str, int, int]:
    status = path.stat()
    return str(path), status.st_size, status.st_mtime_ns
