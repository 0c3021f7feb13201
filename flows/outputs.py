"""What a run writes besides the prepared data, and the staging folder it writes into.

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
from hyperlearn.pipeline.publish import staging_dir_for, write_embeddings, write_json_atomic

MANIFEST = "manifest.json"
METRICS = "metrics.json"
REPORT = "report.png"


@contextmanager
def staged_run_dir(dataset_dir: Path, version: str) -> Iterator[Path]:
    """Create the staging folder of `version` and yield it; on leaving, remove whatever is still there.

    After a successful publish the folder has been renamed into place, so nothing is left to remove; after a
    failure the half-written run goes, and the published versions, `latest` and the catalog were never touched.
    """
    run_dir = staging_dir_for(dataset_dir, version)
    run_dir.mkdir(parents=True)
    try:
        yield run_dir
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def write_training_outputs(
    run_dir: Path, *, dataset: str, version: str, config: TrainingConfig, result: TrainResult
) -> list[Path]:
    """Write one embedding Parquet per modality (keys from the run's catalog), make sure `checkpoints/`
    exists, and draw `report.png`; return the embedding files."""
    run_dir = Path(run_dir)
    metadata = {
        "hyperlearn.dataset": dataset,
        "hyperlearn.version": version,
        "hyperlearn.config_hash": config.config_hash(),
    }
    files = []
    for modality, factor in sorted(result.factors.items()):
        catalog = EntityCatalog.load(run_dir / "catalog", modality)
        files.append(
            write_embeddings(
                run_dir / "embeddings",
                modality=modality,
                entity_ids=np.arange(len(catalog), dtype=np.int64),
                keys=catalog.keys.to_numpy(),
                embeddings=factor,
                metadata=metadata,
            )
        )
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    plot_training_curves(result.history, run_dir / REPORT)
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


def write_metrics(run_dir: Path, summary: Mapping[str, Any], stage_seconds: Mapping[str, float]) -> Path:
    """Write `metrics.json`: the training summary plus the wall seconds of every pipeline stage."""
    path = Path(run_dir) / METRICS
    write_json_atomic(path, json_ready({**summary, "stage_seconds": dict(stage_seconds)}))
    return path


def write_manifest(
    run_dir: Path,
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
    run_dir = Path(run_dir)
    files = [
        {"path": path.relative_to(run_dir).as_posix(), "bytes": path.stat().st_size}
        for path in sorted(run_dir.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    ]
    manifest = {
        "dataset": dataset,
        "version": version,
        "spec": {"path": str(Path(spec_path).resolve()), "hash": spec_hash},
        "mode": summary["mode"],
        "device": summary["device"],
        "training": config.to_dict(),
        "config_hash": config.config_hash(),
        "entities": {name: len(EntityCatalog.load(run_dir / "catalog", name)) for name in modalities},
        "ingest": ingest_report,
        "graphs": graph_stats,
        "files": files,
    }
    path = run_dir / MANIFEST
    write_json_atomic(path, json_ready(manifest))
    return path


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
