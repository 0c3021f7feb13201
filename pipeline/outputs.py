"""What a version holds besides the prepared data, and the staging folder it is written into.

Plain functions, no Prefect: the flow's tasks call them, and tests call them directly.

- `staged_run_dir`: the staging folder, removed again unless the run published it;
- `write_training_outputs`: embedding Parquet per modality, the checkpoints folder, `report.png`;
- `write_record`: `metrics.json` (test metrics, timings, the training curve) and `manifest.json` (what went in,
  what came out, every file with its size).
"""

from __future__ import annotations

import errno
import math
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hyperlearn.config import TrainingConfig
from hyperlearn.report import plot_training_curves
from hyperlearn.result import TrainResult
from hyperlearn.pipeline.catalog import EntityCatalog
from hyperlearn.pipeline.publish import write_embeddings, write_json_atomic
from hyperlearn.pipeline.spec import DatasetSpec
from hyperlearn.rundir import DatasetDir, RunDir


@contextmanager
def staged_run_dir(dataset_dir: Path, version: str) -> Iterator[RunDir]:
    """Create the staging folder of `version` and yield it; on leaving, remove whatever is still there.

    After a successful publish the folder has been renamed into place, so nothing is left to remove; after a
    failure the half-written run goes, and the published versions, `latest` and the catalog were never touched.
    A full disk (which NumPy and Arrow report without a path) is re-raised naming the run's folder.
    """
    run = DatasetDir(dataset_dir).staging(version)
    run.path.mkdir(parents=True)
    try:
        yield run
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        where = error.filename or run.path
        raise OSError(errno.ENOSPC, f"no space left on the device while writing {where}; the run was discarded and "
                      "nothing published changed", str(where)) from error
    finally:
        shutil.rmtree(run.path, ignore_errors=True)


def write_training_outputs(
    run: RunDir, *, dataset: str, version: str, config: TrainingConfig, result: TrainResult
) -> list[Path]:
    """Write one embedding Parquet per modality (keys from the run's catalog), make sure `checkpoints/`
    exists, and draw `report.png`; return the embedding files."""
    metadata = {
        "hyperlearn.dataset": dataset,
        "hyperlearn.version": version,
        "hyperlearn.config_hash": config.config_hash(),
    }
    files = []
    for modality, factor in sorted(result.factors.items()):
        catalog = EntityCatalog.load(run.catalog, modality)
        files.append(
            write_embeddings(
                run,
                modality=modality,
                entity_ids=np.arange(len(catalog), dtype=np.int64),
                keys=catalog.keys.to_numpy(),
                embeddings=factor,
                metadata=metadata,
            )
        )
    run.checkpoints.mkdir(exist_ok=True)
    plot_training_curves(result.history, run.report)
    return files


def training_summary(result: TrainResult, device: str) -> dict[str, Any]:
    """The JSON-ready part of a training result that metrics.json keeps: no arrays, NaN as null."""
    return json_ready(
        {
            "mode": result.mode,
            "device": device,
            "metrics": result.metrics,
            "training_timings": result.timings,
            "history": result.history,
        }
    )


@dataclass(frozen=True)
class VersionRecord:
    """What a run records about the version it made: the inputs, the settings, and each stage's summary."""

    spec: DatasetSpec
    version: str
    config: TrainingConfig
    training: Mapping[str, Any]  # `training_summary` of the result
    ingest: Mapping[str, Any]  # IngestReport.to_dict()
    graphs: Mapping[str, Any]  # GraphStats.to_dict() per modality
    stage_seconds: Mapping[str, float]


def write_record(run: RunDir, record: VersionRecord) -> None:
    """Write `metrics.json` (the training summary and every stage's wall seconds), then `manifest.json`, last,
    listing every other file of the run (relative path, bytes)."""
    write_json_atomic(run.metrics, json_ready({**record.training, "stage_seconds": dict(record.stage_seconds)}))
    files = [
        {"path": run.relative(path), "bytes": path.stat().st_size}
        for path in sorted(run.path.rglob("*"))
        if path.is_file() and path != run.manifest
    ]
    manifest = {
        "dataset": record.spec.name,
        "version": record.version,
        "spec": {"path": str(Path(record.spec.spec_path).resolve()), "hash": record.spec.spec_hash},
        "mode": record.training["mode"],
        "device": record.training["device"],
        "training": record.config.to_dict(),
        "config_hash": record.config.config_hash(),
        "entities": {m.name: len(EntityCatalog.load(run.catalog, m.name)) for m in record.spec.modalities},
        "ingest": record.ingest,
        "graphs": record.graphs,
        "files": files,
    }
    write_json_atomic(run.manifest, json_ready(manifest))


def json_ready(value: Any) -> Any:
    """`value` with NumPy scalars made plain and non-finite floats made None, so strict JSON can hold it."""
    if isinstance(value, Mapping):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
