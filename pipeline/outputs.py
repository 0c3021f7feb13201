"""What a version holds besides the prepared data, and the staging folder it is written into.

Plain functions, no Prefect: the flow's tasks call them, and tests call them directly.

- `staged_run_dir`: the staging folder, removed again unless the run published it;
- `write_training_outputs`: embedding Parquet per modality, bias Parquet per relation and modality,
  `scoring.json` (how each relation scores a tuple: `hyperlearn.pipeline.published`), each modality's resumable
  weights (`encoders/modality=<m>/weights.npz`: free rows and encoder, what a later warm start resumes), the
  checkpoints folder, `report.png`;
- `write_record`: `metrics.json` (test metrics, timings, the training curve, the gate's decision) and
  `manifest.json` (what went in — the spec, every source file's SHA-256, the settings, the parent version —
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
import pyarrow as pa
import pyarrow.parquet as pq

from hyperlearn.config import TrainingConfig
from hyperlearn.report import plot_training_curves
from hyperlearn.result import TrainResult
from hyperlearn.pipeline.catalog import EntityCatalog
from hyperlearn.pipeline.published import SCORING_FILE, RelationScoring, bias_path, scoring_description
from hyperlearn.pipeline.publish import write_embeddings, write_json_atomic
from hyperlearn.pipeline.spec import DatasetSpec
from hyperlearn.rundir import DatasetDir, ModalityState, RelationMeta, RunDir

ENCODERS = "encoders"
ENCODER_WEIGHTS_FILE = "weights.npz"

BIAS_SCHEMA = pa.schema(
    [
        pa.field("entity_id", pa.int64(), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("bias", pa.float32(), nullable=False),
    ]
)


@contextmanager
def staged_run_dir(dataset_dir: Path, version: str, existing: bool = False) -> Iterator[RunDir]:
    """Create the staging folder of `version` (`existing`: take the one a killed run left, to resume it) and
    yield it; on leaving, remove whatever is still there.

    After a successful publish the folder has been renamed into place, so nothing is left to remove; after a
    failure the half-written run goes, and the published versions, `latest` and the catalog were never touched.
    A full disk (which NumPy and Arrow report without a path) is re-raised naming the run's folder.
    """
    run = DatasetDir(dataset_dir).staging(version)
    run.path.mkdir(parents=True, exist_ok=existing)
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
    """Write one embedding Parquet per modality (keys from the run's catalog), one bias Parquet per relation
    and modality, `scoring.json`, make sure `checkpoints/` exists, and draw `report.png`; return the Parquet
    files and `scoring.json`.

    Together the embeddings, biases and `scoring.json` are everything a reader needs to compute the model's
    own score of any tuple (`hyperlearn.pipeline.published`)."""
    metadata = {
        "hyperlearn.dataset": dataset,
        "hyperlearn.version": version,
        "hyperlearn.config_hash": config.config_hash(),
    }
    catalogs = {modality: EntityCatalog.load(run.catalog, modality) for modality in result.states}
    files = []
    for modality, factor in sorted(result.factors.items()):
        files.append(
            write_embeddings(
                run,
                modality=modality,
                entity_ids=np.arange(len(catalogs[modality]), dtype=np.int64),
                keys=catalogs[modality].keys.to_numpy(),
                embeddings=factor,
                metadata=metadata,
            )
        )
    relations = []
    for name in run.relation_names():
        meta = run.read_relation_meta(name)
        for modality in sorted(set(meta.modalities)):
            files.append(write_biases(run, name, modality, catalogs[modality], result.states[modality], metadata))
        rank = _width(meta, result.states)
        relations.append(RelationScoring.from_meta(meta, rank, relation_offset(run, meta, refitted=result.metrics.get("refit_rounds", 0) > 0)))
    description = scoring_description(
        relations, dataset=dataset, version=version, config_hash=config.config_hash(), rank=config.rank
    )
    write_json_atomic(run.path / SCORING_FILE, json_ready(description))
    files.append(run.path / SCORING_FILE)
    for modality, weights in sorted(result.weights.items()):
        files.append(write_encoder_weights(run.path, modality, weights))
    run.checkpoints.mkdir(exist_ok=True)
    plot_training_curves(result.history, run.report)
    return files


def write_biases(
    run: RunDir, relation: str, modality: str, catalog: EntityCatalog, state: ModalityState, metadata: dict[str, str]
) -> Path:
    """Write the biases of `modality` in `relation` as `biases/relation=<r>/modality=<m>/part-0.parquet`
    (entity_id int64, key string, bias float32, one row per catalog entity); non-finite biases are rejected so a
    broken run can't publish."""
    if relation not in state.biases:
        raise ValueError(f"{modality}: the training result has no biases for relation {relation!r}")
    bias = np.asarray(state.biases[relation], dtype=np.float32)
    if bias.shape != (len(catalog),):
        raise ValueError(f"{modality}/{relation}: {bias.shape[0]} biases for {len(catalog)} catalog entities")
    if not np.isfinite(bias).all():
        raise ValueError(f"{modality}/{relation}: biases contain NaN or infinite values")
    schema = BIAS_SCHEMA.with_metadata(
        {**metadata, "hyperlearn.relation": relation, "hyperlearn.modality": modality}
    )
    table = pa.table(
        {"entity_id": np.arange(len(catalog), dtype=np.int64), "key": catalog.keys.to_numpy(), "bias": bias},
        schema=schema,
    )
    path = run.path / bias_path(relation, modality)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def encoder_weights_path(modality: str) -> str:
    """Where a version keeps a modality's resumable weights, relative to the version folder."""
    return f"{ENCODERS}/modality={modality}/{ENCODER_WEIGHTS_FILE}"


def write_encoder_weights(version: Path, modality: str, weights: Mapping[str, np.ndarray]) -> Path:
    """Write a modality's resumable weights (name → array; hyperlearn.warm_start.resumable_weights) as one
    uncompressed .npz of plain float arrays (no pickle)."""
    path = Path(version) / encoder_weights_path(modality)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {name: np.asarray(value) for name, value in weights.items()}
    for name, array in arrays.items():
        if array.dtype.kind != "f" or not np.isfinite(array).all():
            raise ValueError(f"{modality}: weight {name!r} is not a finite float array")
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def read_encoder_weights(version: Path, modality: str) -> dict[str, np.ndarray] | None:
    """A modality's resumable weights from a published version, or None when it has none (older versions)."""
    path = Path(version) / encoder_weights_path(modality)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}


def relation_offset(run: RunDir, meta: RelationMeta, refitted: bool) -> float:
    """The offset the published model adds to every score of `meta`'s relation: the mean value of the entries
    it was fitted to (training, plus validation when a refit ran — not merely when one was asked for: with no
    round better than the start there is none) for a squared relation, else 0 — as
    `hyperlearn.problem.Relation.train_mean` gives it to the trainers."""
    if meta.loss != "squared":
        return 0.0
    splits = ("train", "validation") if refitted else ("train",)
    values = np.concatenate([run.read_relation_split(meta.name, split).values for split in splits])
    return float(values.astype(np.float64).mean()) if values.size else 0.0


def _width(meta: RelationMeta, states: Mapping[str, ModalityState]) -> int:
    """The embedding width shared by the relation's modalities (the blocks split it)."""
    widths = {states[modality].factor.shape[1] for modality in meta.modalities}
    if len(widths) != 1:
        raise ValueError(f"relation {meta.name!r}: its modalities have embeddings of widths {sorted(widths)}")
    return widths.pop()


def training_summary(result: TrainResult, device: str) -> dict[str, Any]:
    """The JSON-ready part of a training result that metrics.json keeps: no arrays, NaN as null."""
    return json_ready(
        {
            "mode": result.mode,
            "device": device,
            "metrics": result.metrics,
            "training_timings": result.timings,
            "history": result.history,
            "resumed_from": result.resumed_from,
            "recovered": result.recovered,
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
    inputs: Mapping[str, Any] | None = None  # InputFingerprint.to_dict() (hyperlearn.pipeline.fingerprint)
    parent: Mapping[str, Any] | None = None  # {"version", "warm_started", "new"}; None: a cold start
    cold_start_reason: str | None = None  # why a run with init_from other than none started cold
    gate: Mapping[str, Any] | None = None  # GateOutcome.to_dict() (hyperlearn.pipeline.gate); None: no gate


def write_record(run: RunDir, record: VersionRecord) -> None:
    """Write `metrics.json` (the training summary, every stage's wall seconds, the gate's decision), then
    `manifest.json`, last, listing every other file of the run (relative path, bytes)."""
    gated = {} if record.gate is None else {"gated": record.gate["gated"], "gate": record.gate}
    write_json_atomic(
        run.metrics, json_ready({**record.training, "stage_seconds": dict(record.stage_seconds), **gated})
    )
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
        "inputs": record.inputs,
        "parent": record.parent,
        "cold_start_reason": record.cold_start_reason,
        **gated,
        "ingest": record.ingest,
        "graphs": record.graphs,
        "resumed_from_round": (record.training.get("resumed_from") or {}).get("round"),
        "resumed_from_phase": (record.training.get("resumed_from") or {}).get("phase"),
        "recovered": record.training.get("recovered", []),
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
