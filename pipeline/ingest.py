"""Ingest: a dataset spec's relation sources → validated, de-duplicated entries → catalog → relation tensors.

Sources are streamed batch by batch (about `memory_limit` / 32 bytes of input each): every batch is validated,
its quarantined rows appended to the relation's quarantine file, its accepted rows' keys normalised and coded
per modality, and the rows spilled to disk in hash partitions of their key tuple, sized so that merging one
partition stays within `memory_limit`. Duplicates are then merged one partition at a time. What stays in
memory is bounded by the entities (the catalog) and the output tensors, not by the rows read.

The persistent catalog is only read: the extended catalog is written into the run directory, and publishing
copies it back, so a failed run never changes the catalog that earlier versions were built with.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from hyperlearn.pipeline.catalog import EntityCatalog
from hyperlearn.pipeline.deduplication import (
    PartitionedRows,
    key_order,
    merge_duplicates,
    partition_count,
    record_dtype,
)
from hyperlearn.pipeline.readers import estimated_rows, read_batches, source_files
from hyperlearn.pipeline.relations import relation_meta, split_labels
from hyperlearn.pipeline.spec import DatasetSpec, KeyNormalisation, RelationSpec, SourceSpec
from hyperlearn.pipeline.validation import (
    FIELD,
    REASON,
    QuarantineWriter,
    key_column,
    key_options,
    relation_columns,
    uses_time,
    validate_batch,
)
from hyperlearn.rundir import SPLITS, Entries, RelationMeta, RunDir

DEFAULT_MEMORY_LIMIT = 1 * 2**30
log = logging.getLogger(__name__)


class IngestError(ValueError):
    """Data that passes the spec but cannot make a usable relation (e.g. no valid row at all)."""


@dataclass(frozen=True)
class RelationReport:
    """Row accounting of one relation: rows_read == rows_accepted + rows_quarantined and
    entries_total == rows_accepted - duplicates_merged. `files` lists the files read, per source."""

    name: str
    rows_read: int
    rows_accepted: int
    rows_quarantined: int
    duplicates_merged: int
    entries: dict[str, int]
    quarantine_file: str  # relative to the run directory (the version folder once published)
    files: dict[str, list[str]]

    @property
    def entries_total(self) -> int:
        return sum(self.entries.values())


@dataclass(frozen=True)
class ModalityReport:
    """Entities of a modality after ingest: `existing` were in the persistent catalog, `new` were added;
    `keys_normalised` counts the distinct keys as read that normalisation changed."""

    name: str
    entities: int
    existing: int
    new: int
    keys_normalised: int


@dataclass(frozen=True)
class IngestReport:
    dataset: str
    spec_hash: str
    relations: tuple[RelationReport, ...]
    modalities: tuple[ModalityReport, ...]
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view, with entries_total spelled out per relation."""
        return {
            "dataset": self.dataset,
            "spec_hash": self.spec_hash,
            "relations": [asdict(r) | {"entries_total": r.entries_total} for r in self.relations],
            "modalities": [asdict(m) for m in self.modalities],
            "warnings": list(self.warnings),
        }


class KeyCodes:
    """Provisional codes of one modality's keys in the order first seen; `keys` holds them, code = position."""

    def __init__(self) -> None:
        self.keys = pd.Index([], dtype=object)
        self.changed: set[str] = set()

    def codes(self, keys: pa.Array) -> np.ndarray:
        """The code of each key (int64), giving new keys the next codes."""
        encoded = pc.dictionary_encode(keys)
        uniques = encoded.dictionary.to_numpy(zero_copy_only=False).astype(object)
        found = self.keys.get_indexer(uniques)
        unseen = found < 0
        if unseen.any():
            found[unseen] = np.arange(len(self.keys), len(self.keys) + int(unseen.sum()))
            self.keys = self.keys.append(pd.Index(uniques[unseen], dtype=object))
        return found.astype(np.int64)[encoded.indices.to_numpy(zero_copy_only=False)]


@dataclass
class _SourceRows:
    """What reading one relation source left: its spilled accepted rows and counts."""

    rows: PartitionedRows
    read: int = 0
    accepted: int = 0


def ingest(
    spec: DatasetSpec,
    run: RunDir,
    catalog_dir: Path,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    progress: bool = False,
) -> IngestReport:
    """Read, validate and de-duplicate every relation of `spec`; extend the catalog with their keys; write
    quarantine files, relation tensors per split and the catalog into `run`. Memory stays near `memory_limit`
    bytes plus the catalog and the output tensors; `progress` shows a bar over the bytes read."""
    files = {
        (relation.name, name): source_files(source)
        for relation in spec.relations
        for name, source in relation.sources.items()
    }
    total_bytes = sum(path.stat().st_size for paths in files.values() for path in paths)
    codes = {modality.name: KeyCodes() for modality in spec.modalities}
    warnings: list[str] = []
    run.path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".ingest-", dir=run.path) as scratch, tqdm(
        total=total_bytes, unit="B", unit_scale=True, desc="ingest", disable=not progress
    ) as bar:
        read = {
            relation.name: _read_relation(spec, relation, run, Path(scratch), codes, memory_limit, files, bar)
            for relation in spec.relations
        }
        catalogs = {m.name: EntityCatalog.load(catalog_dir, m.name) for m in spec.modalities}
        ids = {name: catalogs[name].assign(codes[name].keys) for name in catalogs}
        relation_reports = []
        for relation in spec.relations:
            sources, accounting = read[relation.name]
            tensors, meta, merged = _relation_tensors(relation, sources, ids, catalogs, spec)
            run.write_relation(meta, tensors)
            report = RelationReport(
                name=relation.name,
                entries={split: tensor.nnz for split, tensor in tensors.items()},
                duplicates_merged=merged,
                files={name: [str(path) for path in files[relation.name, name]] for name in relation.sources},
                **accounting,
            )
            if report.rows_accepted > 1 and report.entries_total <= 1:
                warnings.append(
                    f"relation {relation.name!r}: all {report.rows_accepted} accepted rows merged into one entry"
                )
            relation_reports.append(report)
    for catalog in catalogs.values():
        catalog.save(run.catalog)
        if len(catalog) == 1:
            warnings.append(f"modality {catalog.modality!r} has a single entity: {catalog.keys[0]!r}")
    for warning in warnings:
        log.warning(warning)
    return IngestReport(
        dataset=spec.name,
        spec_hash=spec.spec_hash,
        relations=tuple(relation_reports),
        modalities=tuple(
            ModalityReport(
                name=name, entities=len(c), existing=c.existing, new=c.new, keys_normalised=len(codes[name].changed)
            )
            for name, c in catalogs.items()
        ),
        warnings=tuple(warnings),
    )


def _read_relation(
    spec: DatasetSpec,
    relation: RelationSpec,
    run: RunDir,
    scratch: Path,
    codes: dict[str, KeyCodes],
    memory_limit: int,
    files: Mapping[tuple[str, str], list[Path]],
    bar: tqdm,
) -> tuple[dict[str, _SourceRows], dict[str, Any]]:
    """Stream every source of a relation: validate, quarantine, code and spill; return the spilled rows per
    source and the relation's row accounting. Raise IngestError when no row was accepted."""
    options = [key_options(spec.modality(name)) for name in relation.modalities]
    quarantine = QuarantineWriter(run.relation_quarantine(relation.name))
    dtype = record_dtype(relation.order, uses_time(relation))
    blocksize = max(2**20, min(32 * 2**20, memory_limit // 32))  # reading holds about 18 blocks' worth
    sources = {}
    try:
        for name, source in relation.sources.items():
            paths = files[relation.name, name]
            estimate = estimated_rows(source, paths)
            partitions = partition_count(estimate, dtype, memory_limit)
            rows = PartitionedRows(scratch / relation.name / name, relation.order, uses_time(relation), partitions)
            sources[name] = _read_source(relation, source, rows, options, codes, quarantine, blocksize, bar)
    finally:
        path = quarantine.close()
    rows_read = sum(s.read for s in sources.values())
    rows_accepted = sum(s.accepted for s in sources.values())
    if rows_accepted == 0:
        first = ""
        if quarantine.first is not None:
            row = quarantine.first
            first = f"; first: {row['source_file']} row {row['row_number']}, {row[FIELD]}: {row[REASON]}"
        raise IngestError(f"relation {relation.name!r}: none of its {rows_read} rows passed validation{first}")
    accounting = dict(
        rows_read=rows_read,
        rows_accepted=rows_accepted,
        rows_quarantined=quarantine.rows,
        quarantine_file=run.relative(path),
    )
    return sources, accounting


def _read_source(
    relation: RelationSpec,
    source: SourceSpec,
    rows: PartitionedRows,
    options: list[KeyNormalisation],
    codes: dict[str, KeyCodes],
    quarantine: QuarantineWriter,
    blocksize: int,
    bar: tqdm,
) -> _SourceRows:
    """Stream one source: each batch validated, its rejects quarantined, its keys coded, its rows spilled;
    one log line per file read."""
    read = _SourceRows(rows)
    current, file_rows, file_rejected = None, 0, 0
    for batch in read_batches(source, relation_columns(relation), blocksize=blocksize):
        if batch.path != current:
            _log_file(current, file_rows, file_rejected)
            current, file_rows, file_rejected = batch.path, 0, 0
        validated = validate_batch(batch, relation, options)
        quarantine.write(validated.quarantined)
        axis_codes = []
        for modality, keys, changed in zip(relation.modalities, validated.keys, validated.changed):
            axis_codes.append(codes[modality].codes(keys))
            codes[modality].changed |= changed
        rows.append(axis_codes, validated.values, validated.times)
        read.read += len(batch)
        read.accepted += validated.accepted
        file_rows += len(batch)
        file_rejected += len(validated.quarantined)
        bar.update(batch.input_bytes)
    _log_file(current, file_rows, file_rejected)
    return read


def _log_file(path: str | None, rows: int, rejected: int) -> None:
    if path is not None:
        log.info("%s: %d rows read, %d quarantined", path, rows, rejected)


def _relation_tensors(
    relation: RelationSpec,
    sources: dict[str, _SourceRows],
    ids: dict[str, np.ndarray],
    catalogs: dict[str, EntityCatalog],
    spec: DatasetSpec,
) -> tuple[dict[str, Entries], RelationMeta, int]:
    """Merge each source's duplicates partition by partition, map codes to catalog ids, split, and assemble one
    tensor per split (coordinates in lexicographic order); also return how many rows were merged away."""
    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {split: [] for split in SPLITS}
    merged = 0
    carve = "validation" not in sources
    sizes = tuple(len(ids[name]) for name in relation.modalities)
    for source_name, read in sources.items():
        entries = 0
        for records in read.rows.partitions():
            codes, values = merge_duplicates(records, relation.order, relation.duplicates, sizes)
            coords = np.stack([ids[name][codes[axis]] for axis, name in enumerate(relation.modalities)])
            labels = split_labels(relation, _keys_frame(coords, relation, catalogs), source_name, spec.split, carve)
            for split in SPLITS:
                chosen = labels == split
                parts[split].append((coords[:, chosen], values[chosen].astype(np.float32)))
            entries += len(values)
        merged += read.accepted - entries
    shape = tuple(len(catalogs[name]) for name in relation.modalities)
    tensors = {split: _entries(parts.pop(split), relation.order, shape) for split in SPLITS}
    return tensors, relation_meta(relation, shape, tensors["train"].values), merged


def _keys_frame(coords: np.ndarray, relation: RelationSpec, catalogs: dict[str, EntityCatalog]) -> pd.DataFrame:
    """The entries' keys as categorical columns over the catalogs (hashed like the key strings they stand for)."""
    return pd.DataFrame(
        {
            key_column(axis): pd.Categorical.from_codes(coords[axis], categories=catalogs[name].keys)
            for axis, name in enumerate(relation.modalities)
        }
    )


def _entries(pieces: list[tuple[np.ndarray, np.ndarray]], order: int, shape: tuple[int, ...]) -> Entries:
    """One split's entries from its pieces (emptied on the way, to free them), coordinates in lexicographic
    order; explicit zeros are kept (they are observations). Sorted one axis at a time to bound the copies."""
    coords = np.concatenate([c for c, _ in pieces], axis=1) if pieces else np.empty((order, 0), dtype=np.int64)
    values = np.concatenate([v for _, v in pieces]) if pieces else np.empty(0, dtype=np.float32)
    pieces.clear()
    permutation = key_order(coords, shape)
    for axis in range(order):
        coords[axis] = coords[axis][permutation]
    return Entries(coords, values[permutation], shape)
