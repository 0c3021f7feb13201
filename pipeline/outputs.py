"""What a version holds besides the prepared data, and the staging folder it is written into.

Plain functions, no Prefect: the flow's tasks call them, and tests call them directly.

- `staged_run_dir`: the staging folder, removed again unless the run published it;
- `write_training_outputs`: embedding Parquet per modality, the checkpoints folder, `report.png`;
- `write_metrics`: `metrics.json` (test metrics, timings, the training curve);
- `write_manifest`: `manifest.json` (what went in, what came out, every file with its size).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from hyperlearn.config import TrainingConfig
from hyperlearn.report import plot_training_curves
from hyperlearn.result import TrainResult
from hyperlearn.pipeline.catalog import EntityCatalog
from hyperlearn.pipeline.publish import write_embeddings, write_json_atomic
from hyperlearn.rundir import DatasetDir, RunDir


@contextmanager
def staged_run_dir(dataset_dir: Path, version: str) -> Iterator[RunDir]:
    """Create the staging folder of `version` and yield it; on leaving, remove whatever is still there.

    After a successful publish the folder has been renamed into place, so nothing is left to remove; after a
    failure the half-written run goes, and the published versions, `latest` and the catalog were never touched.
    """
    run = DatasetDir(dataset_dir).staging(version)
    run.path.mkdir(parents=True)
    try:
        yield run
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


def write_metrics(run: RunDir, summary: Mapping[str, Any], stage_seconds: Mapping[str, float]) -> Path:
    """Write `metrics.json`: the training summary plus the wall seconds of every pipeline stage."""
    write_json_atomic(run.metrics, json_ready({**summary, "stage_seconds": dict(stage_seconds)}))
    return run.metrics


def write_manifest(
    run: RunDir,
    *,
    spec_path: Path,
    spec_hash: str,
    dataset: str,
    version: str,
    modalities: Sequence[str],
    config: TrainingConfig,
    summary: Mapping[str, Any],
    ingest_report: Mapping[str, Any],
    graph_stats: Mapping[str, Any],
) -> Path:
    """Write `manifest.json` last, listing every other file of the run (relative path, bytes)."""
    files = [
        {"path": run.relative(path), "bytes": path.stat().st_size}
        for path in sorted(run.path.rglob("*"))
        if path.is_file() and path != run.manifest
    ]
    manifest = {
        "dataset": dataset,
        "version": version,
        "spec": {"path": str(Path(spec_path).resolve()), "hash": spec_hash},
        "mode": summary["mode"],
        "device": summary["device"],
        "training": config.to_dict(),
        "config_hash": config.config_hash(),
        "entities": {name: len(EntityCatalog.load(run.catalog, name)) for name in modalities},
        "ingest": ingest_report,
        "graphs": graph_stats,
        "files": files,
    }
    write_json_atomic(run.manifest, json_ready(manifest))
    return run.manifest


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
