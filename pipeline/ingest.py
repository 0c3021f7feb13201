"""Ingest: a dataset spec's relation sources → validated, de-duplicated entries → catalog → relation tensors.

Sources are streamed batch by batch (about `memory_limit` / 32 bytes of input each): every batch is validated,
its quarantined rows appended to the relation's quarantine file, its accepted rows' keys normalised and coded
per modality, and the rows spilled to disk in hash partitions of their key tuple, sized so that merging one
partition stays within `memory_limit`. Duplicates are then merged one partition at a time. What stays in
memory is bounded by the entities (the catalog) and the output tensors, not by the rows read.

Given a Dask client, the blocks are read, parsed and validated on that cluster's workers instead, one task per
block (`hyperlearn.pipeline.cluster_reading`); the driver codes, spills, merges and writes the same blocks in the
same order, so the run directory is byte for byte what this process alone writes. When some worker does not see
the source files as this process does, this process reads them itself, with a warning.

The persistent catalog is only read: the extended catalog is written into the run directory, and publishing
copies it back, so a failed run never changes the catalog that earlier versions were built with.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from hyperlearn.pipeline.catalog import EntityCatalog
from hyperlearn.pipeline.cluster_reading import sources_unseen, validate_on_cluster
from hyperlearn.pipeline.deduplication import PartitionedRows, merge_duplicates, partition_count, record_dtype
from hyperlearn.pipeline.key_ranges import RangeSpill, range_budget
from hyperlearn.pipeline.readers import estimated_rows, source_files
from hyperlearn.pipeline.relations import key_hashes, relation_meta, split_labels
from hyperlearn.pipeline.spec import DatasetSpec, RelationSpec
from hyperlearn.pipeline.validation import (
    FIELD,
    REASON,
    QuarantineWriter,
    ValidatedBlock,
    key_options,
    uses_time,
    validate_source,
)
from hyperlearn.rundir import SPLITS, RunDir

if TYPE_CHECKING:
    from distributed import Client

DEFAULT_MEMORY_LIMIT = 1 * 2**30
log = logging.getLogger(__name__)


class IngestError(ValueError):
    """Data that passes the spec but cannot make a usable relation (e.g. no valid row at all)."""


@dataclass(frozen=True)
class RelationReport:
    """Row accounting of one relation: rows_read == rows_accepted + rows_quarantined and
    entries_total == tuples - duplicates_merged, where `tuples` is what the accepted rows hold (one each, or
    one per value of a multi-valued key field). `files` lists the files read, per source."""

    name: str
    rows_read: int
    rows_accepted: int
    rows_quarantined: int
    tuples: int
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
    """What ingest did. `read_on` is the scheduler address of the cluster whose workers read and validated the
    sources, None when this process did; it is no part of `to_dict` (the manifest's view), since where the
    sources were read changes nothing in the run."""

    dataset: str
    spec_hash: str
    relations: tuple[RelationReport, ...]
    modalities: tuple[ModalityReport, ...]
    warnings: tuple[str, ...] = ()
    read_on: str | None = None

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
    """Provisional codes of one modality's keys in the order first seen (code = position in `keys`), looked up
    batch by batch with Arrow's hash kernels; `changed` collects the keys as read that normalisation changed."""

    def __init__(self) -> None:
        self._known = pa.array([], pa.large_string())
        self.changed: set[str] = set()

    @property
    def keys(self) -> np.ndarray:
        """Every key seen, position = code (object array of str)."""
        return self._known.to_numpy(zero_copy_only=False)

    def codes(self, keys: pa.Array) -> np.ndarray:
        """The code of each (non-null) key, int64, giving keys not seen before the next codes, in order of first
        appearance. A dictionary array is coded through its dictionary (which holds each key once, in order of
        first appearance, so the codes are the same)."""
        if pa.types.is_dictionary(keys.type):
            return self.codes(keys.dictionary)[keys.indices.to_numpy(zero_copy_only=False)]
        keys = keys.cast(pa.large_string())
        found = pc.index_in(keys, value_set=self._known)
        if found.null_count:
            offset = len(self._known)
            unseen = pc.unique(keys.filter(pc.is_null(found)))
            self._known = pa.concat_arrays([self._known, unseen])
            found = pc.coalesce(found, pc.add(pc.index_in(keys, value_set=unseen), offset))
        return found.to_numpy(zero_copy_only=False).astype(np.int64)


@dataclass
class _SourceRows:
    """What reading one relation source left: its spilled accepted rows and counts."""

    rows: PartitionedRows
    read: int = 0
    accepted: int = 0
    tuples: int = 0


def ingest(
    spec: DatasetSpec,
    run: RunDir,
    catalog_dir: Path,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    progress: bool = False,
    client: Client | None = None,
) -> IngestReport:
    """Read, validate and de-duplicate every relation of `spec`; extend the catalog with their keys; write
    quarantine files, relation tensors per split and the catalog into `run`. Memory stays near `memory_limit`
    bytes plus the catalog and the output tensors; `progress` shows a bar over the bytes read. With `client`,
    sources are read and validated on its cluster's workers, the result being the same, when every worker sees
    every source file at its path with the same size; else (logged as a warning) in this process. The report's
    `read_on` says which."""
    files = {
        (relation.name, name): source_files(source)
        for relation in spec.relations
        for name, source in relation.sources.items()
    }
    total_bytes = sum(path.stat().st_size for paths in files.values() for path in paths)
    if client is not None:
        unseen = sources_unseen(client, {path: path.stat().st_size for paths in files.values() for path in paths})
        if unseen:
            more = f" (and {len(unseen) - 1} more)" if len(unseen) > 1 else ""
            log.warning("ingest runs in this process: the cluster's workers do not see the sources as this process "
                        "does: %s%s", unseen[0], more)
            client = None
    codes = {modality.name: KeyCodes() for modality in spec.modalities}
    warnings: list[str] = []
    run.path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".ingest-", dir=run.path) as scratch, tqdm(
        total=total_bytes, unit="B", unit_scale=True, desc="ingest", disable=not progress
    ) as bar:
        read = {
            relation.name: _read_relation(spec, relation, run, Path(scratch), codes, memory_limit, files, bar, client)
            for relation in spec.relations
        }
        release_unused_memory()
        catalogs = {m.name: EntityCatalog.load(catalog_dir, m.name) for m in spec.modalities}
        ids = {name: catalogs[name].assign(codes[name].keys) for name in catalogs}
        hashes = {name: key_hashes(catalog.keys) for name, catalog in catalogs.items()}
        relation_reports = []
        for relation in spec.relations:
            sources, accounting = read[relation.name]
            shape = tuple(len(catalogs[name]) for name in relation.modalities)
            entries, merged = _write_relation(
                run, relation, sources, ids, hashes, shape, spec, Path(scratch), memory_limit
            )
            report = RelationReport(
                name=relation.name,
                entries=entries,
                duplicates_merged=merged,
                files={name: [str(path) for path in files[relation.name, name]] for name in relation.sources},
                **accounting,
            )
            if report.tuples > 1 and report.entries_total <= 1:
                warnings.append(f"relation {relation.name!r}: all {report.tuples} accepted tuples merged into one entry")
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
        read_on=None if client is None else client.scheduler.address,
    )


def release_unused_memory() -> None:
    """Give back to the OS the memory Arrow's pool and malloc keep from the phase just finished (read blocks,
    merged partitions), so that the next phase's peak is its own working set rather than that on top of the
    last phase's leftovers: at 100M rows the sorting of key ranges otherwise peaks ~0.5 GiB above its need."""
    pa.default_memory_pool().release_unused()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None) if sys.platform.startswith("linux") else None
    if trim is not None:  # glibc's; other C libraries have none
        trim(0)


def _read_relation(
    spec: DatasetSpec,
    relation: RelationSpec,
    run: RunDir,
    scratch: Path,
    codes: dict[str, KeyCodes],
    memory_limit: int,
    files: Mapping[tuple[str, str], list[Path]],
    bar: tqdm,
    client: Client | None,
) -> tuple[dict[str, _SourceRows], dict[str, Any]]:
    """Stream every source of a relation: validate (here, or on `client`'s workers), quarantine, code and
    spill; return the spilled rows per source and the relation's row accounting. Raise IngestError when no row
    was accepted."""
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
            if client is None:
                blocks = validate_source(source, relation, options, blocksize)
            else:
                blocks = validate_on_cluster(client, source, relation, options, blocksize)
            sources[name] = _read_source(relation, blocks, rows, codes, quarantine, bar)
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
        tuples=sum(s.tuples for s in sources.values()),
        rows_quarantined=quarantine.rows,
        quarantine_file=run.relative(path),
    )
    return sources, accounting


def _read_source(
    relation: RelationSpec,
    blocks: Iterator[ValidatedBlock],
    rows: PartitionedRows,
    codes: dict[str, KeyCodes],
    quarantine: QuarantineWriter,
    bar: tqdm,
) -> _SourceRows:
    """Stream one source's validated blocks: rejects quarantined, keys coded, rows spilled; one log line per
    file read."""
    read = _SourceRows(rows)
    current, file_rows, file_rejected = None, 0, 0
    for block in blocks:
        if block.path != current:
            _log_file(current, file_rows, file_rejected)
            current, file_rows, file_rejected = block.path, 0, 0
        validated = block.validated
        quarantine.write(validated.quarantined)
        axis_codes = []
        for modality, keys, changed in zip(relation.modalities, validated.keys, validated.changed):
            axis_codes.append(codes[modality].codes(keys))
            codes[modality].changed |= changed
        rows.append(axis_codes, validated.values, validated.times)
        read.read += block.rows
        read.accepted += validated.accepted
        read.tuples += validated.tuples
        file_rows += block.rows
        file_rejected += len(validated.quarantined)
        bar.update(block.input_bytes)
    _log_file(current, file_rows, file_rejected)
    return read


def _log_file(path: str | None, rows: int, rejected: int) -> None:
    if path is not None:
        log.info("%s: %d rows read, %d quarantined", path, rows, rejected)


def _write_relation(
    run: RunDir,
    relation: RelationSpec,
    sources: dict[str, _SourceRows],
    ids: dict[str, np.ndarray],
    hashes: dict[str, np.ndarray],
    shape: tuple[int, ...],
    spec: DatasetSpec,
    scratch: Path,
    memory_limit: int,
) -> tuple[dict[str, int], int]:
    """Merge each source's duplicates partition by partition, map codes to catalog ids, split, spill each split
    by key range, and write every split in lexicographic order of its coordinates, one key range at a time,
    then the relation's meta. Return the entries per split and how many rows were merged away."""
    spills = {split: RangeSpill(scratch / relation.name / f"{split}.entries", shape) for split in SPLITS}
    merged = 0
    value_range = (np.inf, -np.inf)
    carve = "validation" not in sources
    sizes = tuple(len(ids[name]) for name in relation.modalities)
    try:
        for source_name, read in sources.items():
            entries = 0
            for records in read.rows.partitions():
                codes, values = merge_duplicates(records, relation.order, relation.duplicates, sizes)
                del records
                coords = np.stack([ids[name][codes[axis]] for axis, name in enumerate(relation.modalities)])
                entry_hashes = [hashes[name][coords[axis]] for axis, name in enumerate(relation.modalities)]
                labels = split_labels(relation, entry_hashes, source_name, spec.split, carve)
                values = values.astype(np.float32)
                for index, split in enumerate(SPLITS):
                    chosen = labels == index
                    spills[split].append(coords[:, chosen], values[chosen])
                    if split == "train" and chosen.any():
                        low, high = values[chosen].min(), values[chosen].max()
                        value_range = (min(value_range[0], low), max(value_range[1], high))
                entries += len(values)
            merged += read.tuples - entries
        budget = range_budget(relation.order, memory_limit)
        release_unused_memory()
        for split, spill in spills.items():
            with run.split_writer(relation.name, split, shape) as writer:
                for coords, values in spill.sorted_chunks(budget):
                    writer.append(coords, values)
    finally:
        for spill in spills.values():
            spill.close()
    run.write_relation_meta(relation_meta(relation, shape, None if np.isinf(value_range[0]) else value_range))
    return {split: spill.entries for split, spill in spills.items()}, merged
