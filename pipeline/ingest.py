"""Ingest: a dataset spec's relation sources → validated, de-duplicated entries → catalog → relation tensors.

Sources are read and validated partition by partition with Dask, all relations in one `dask.compute`, on
whatever scheduler is current (a distributed Client when one is active). The persistent catalog is only read:
the extended catalog is written into the run directory, and publishing copies it back, so a failed run never
changes the catalog that earlier versions were built with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dask
import dask.dataframe as dd
import pandas as pd

from hyperlearn.rundir import RunDir
from hyperlearn.pipeline.catalog import EntityCatalog
from hyperlearn.pipeline.readers import ROW_NUMBER, SOURCE_FILE, read_source
from hyperlearn.pipeline.relations import build_relation
from hyperlearn.pipeline.spec import DatasetSpec, RelationSpec, SourceSpec
from hyperlearn.pipeline.validation import (
    FIELD,
    REASON,
    deduplicate,
    key_column,
    relation_columns,
    split_validated,
    validate_relation_rows,
    write_quarantine,
)


class IngestError(ValueError):
    """Data that passes the spec but cannot make a usable relation (e.g. no valid row at all)."""


@dataclass(frozen=True)
class RelationReport:
    """Row accounting of one relation: rows_read == rows_accepted + rows_quarantined and
    entries_total == rows_accepted - duplicates_merged."""

    name: str
    rows_read: int
    rows_accepted: int
    rows_quarantined: int
    duplicates_merged: int
    entries: dict[str, int]
    quarantine_file: str  # relative to the run directory (the version folder once published)

    @property
    def entries_total(self) -> int:
        return sum(self.entries.values())


@dataclass(frozen=True)
class ModalityReport:
    """Entities of a modality after ingest: `existing` were in the persistent catalog, `new` were added."""

    name: str
    entities: int
    existing: int
    new: int


@dataclass(frozen=True)
class IngestReport:
    dataset: str
    spec_hash: str
    relations: tuple[RelationReport, ...]
    modalities: tuple[ModalityReport, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view, with entries_total spelled out per relation."""
        return {
            "dataset": self.dataset,
            "spec_hash": self.spec_hash,
            "relations": [asdict(r) | {"entries_total": r.entries_total} for r in self.relations],
            "modalities": [asdict(m) for m in self.modalities],
        }


def ingest(spec: DatasetSpec, run: RunDir, catalog_dir: Path) -> IngestReport:
    """Read, validate and de-duplicate every relation of `spec`; extend the catalog with their keys; write
    quarantine files, relation tensors per split and the catalog into `run`."""
    lazy = {
        (relation.name, source_name): validated_source(relation, source)
        for relation in spec.relations
        for source_name, source in relation.sources.items()
    }
    computed = dict(zip(lazy, dask.compute(*lazy.values())))

    entries: dict[str, dict[str, pd.DataFrame]] = {}
    accounting: dict[str, dict[str, int | str]] = {}
    for relation in spec.relations:
        validated = {source_name: computed[relation.name, source_name] for source_name in relation.sources}
        entries[relation.name], accounting[relation.name] = _accept(relation, validated, run)

    catalogs = {m.name: EntityCatalog.load(catalog_dir, m.name) for m in spec.modalities}
    for name, catalog in catalogs.items():
        catalog.assign(pd.concat(_keys_of(name, spec.relations, entries), ignore_index=True))

    relation_reports = []
    for relation in spec.relations:
        tensors, meta = build_relation(relation, entries[relation.name], catalogs, spec.split)
        run.write_relation(meta, tensors)
        counts = {split: int(tensor.nnz) for split, tensor in tensors.items()}
        relation_reports.append(RelationReport(name=relation.name, entries=counts, **accounting[relation.name]))
    for catalog in catalogs.values():
        catalog.save(run.catalog)
    return IngestReport(
        dataset=spec.name,
        spec_hash=spec.spec_hash,
        relations=tuple(relation_reports),
        modalities=tuple(
            ModalityReport(name=name, entities=len(c), existing=c.existing, new=c.new) for name, c in catalogs.items()
        ),
    )


def validated_source(relation: RelationSpec, source: SourceSpec) -> dd.DataFrame:
    """One source of a relation, read and validated lazily, partition by partition."""
    rows = read_source(source, relation_columns(relation))
    meta = validate_relation_rows(rows._meta, relation)
    return rows.map_partitions(validate_relation_rows, relation, meta=meta)


def _accept(
    relation: RelationSpec, validated: dict[str, pd.DataFrame], run: RunDir
) -> tuple[dict[str, pd.DataFrame], dict[str, int | str]]:
    """Split validated rows into entries, de-duplicated within each source, and quarantined rows (written to
    the run); return the entries and the relation's row accounting. Raise IngestError when no row was accepted."""
    entries, quarantined = {}, []
    rows_read = rows_accepted = merged = 0
    for source_name, frame in validated.items():
        accepted, rejected = split_validated(frame)
        entries[source_name], merged_here = deduplicate(accepted, relation)
        quarantined.append(rejected)
        rows_read += len(frame)
        rows_accepted += len(accepted)
        merged += merged_here
    rejected = pd.concat(quarantined, ignore_index=True)
    path = write_quarantine(rejected, run.relation_quarantine(relation.name))
    if rows_accepted == 0:
        first = ""
        if len(rejected):
            row = rejected.iloc[0]
            first = f"; first: {row[SOURCE_FILE]} row {row[ROW_NUMBER]}, {row[FIELD]}: {row[REASON]}"
        raise IngestError(f"relation {relation.name!r}: none of its {rows_read} rows passed validation{first}")
    accounting = dict(
        rows_read=rows_read,
        rows_accepted=rows_accepted,
        rows_quarantined=len(rejected),
        duplicates_merged=merged,
        quarantine_file=run.relative(path),
    )
    return entries, accounting


def _keys_of(
    modality: str, relations: tuple[RelationSpec, ...], entries: dict[str, dict[str, pd.DataFrame]]
) -> list[pd.Series]:
    """The keys of `modality` in the entries of every relation spanning it, on every axis it is on."""
    return [
        frame[key_column(axis)]
        for relation in relations
        for axis, name in enumerate(relation.modalities)
        if name == modality
        for frame in entries[relation.name].values()
    ]
