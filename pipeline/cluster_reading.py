"""Reading and validating a relation source on a Dask cluster's workers, one task per piece of a file.

The driver lists the source's files and cuts each into pieces (`readers.file_pieces`: line-aligned byte ranges
of about the ingest block size, or runs of whole Parquet row groups of about that size, the same pieces the
driver itself would read; a UTF-16/32 text file is one piece). Each piece is one task: the worker reads it from
where the source lies (a path every worker sees), parses and validates it, and returns its validated batches
with their keys dictionary-encoded (each distinct key once, and an int32 index per tuple), their quarantine rows
numbered within the piece, and their counts. The driver takes the results in file order, moves the quarantine
rows' numbers on by the rows of the file's earlier pieces, and carries on as for blocks it validated itself
(`validation.validate_source`): the same blocks in the same order, so catalog, tensors and quarantine files are
byte for byte the same.

Nothing of the run directory goes to the workers, and nothing is left on the cluster: at most `in_flight`
pieces are submitted ahead of the one the driver is waiting for, and each result is released once taken.
Before any of that, `sources_unseen` asks every worker whether it can read each source file and sees it with
the driver's size: a cluster whose hosts do not share the data is then told apart before anything is read.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.compute as pc

from hyperlearn.pipeline.readers import Piece, check_rows_read, file_pieces, read_piece, reader_columns, source_files
from hyperlearn.pipeline.spec import KeyNormalisation, RelationSpec, SourceSpec
from hyperlearn.pipeline.validation import ROW_NUMBER, ValidatedBlock, relation_columns, validate_batch

if TYPE_CHECKING:
    from distributed import Client


def sources_unseen(client: Client, sizes: Mapping[Path, int]) -> list[str]:
    """What keeps the workers of `client`'s cluster from reading the source files as the driver does, one line
    per worker and file (a file it cannot read, or sees with another size than the driver's `sizes`, in bytes);
    empty when every worker sees every file."""
    seen = client.run(_readable_sizes, [str(path) for path in sizes])
    problems = []
    for worker, found in sorted(seen.items()):
        for path, expected in sizes.items():
            size = found[str(path)]
            if size is None:
                problems.append(f"worker {worker} cannot read {path}")
            elif size != expected:
                problems.append(f"worker {worker} sees {path} with {size} bytes, the driver with {expected}")
    return problems


def _readable_sizes(paths: list[str]) -> dict[str, int | None]:
    """Run on each worker: the size of each file it can read, None for the others."""
    return {path: os.stat(path).st_size if os.access(path, os.R_OK) and os.path.isfile(path) else None
            for path in paths}


def validate_on_cluster(
    client: Client,
    source: SourceSpec,
    relation: RelationSpec,
    options: list[KeyNormalisation],
    blocksize: int,
    in_flight: int | None = None,
) -> Iterator[ValidatedBlock]:
    """Every batch of `source` validated on the workers of `client`'s cluster, in file order, as
    `validation.validate_source` gives them (keys dictionary-encoded). `in_flight` bounds the pieces submitted
    and not yet taken (default: two per worker thread), and so the memory their results hold."""
    columns = reader_columns(source, relation_columns(relation))
    files = source_files(source)
    pieces = [(path, piece) for path in files for piece in file_pieces(source, path, columns, blocksize)]
    if in_flight is None:
        in_flight = 2 * max(1, sum(client.nthreads().values()))
    pending: deque = deque()
    upcoming = iter(pieces)
    rows_of = dict.fromkeys(files, 0)
    try:
        for path, piece in upcoming:
            pending.append((path, client.submit(validate_piece, source, piece, relation, options, blocksize,
                                                pure=False)))
            if len(pending) > in_flight:
                yield from _taken(*pending.popleft(), rows_of)
        while pending:
            yield from _taken(*pending.popleft(), rows_of)
    finally:
        client.cancel([future for _, future in pending])
    for path in files:
        check_rows_read(source, path, rows_of[path])


def _taken(path: Path, future, rows_of: dict[Path, int]) -> Iterator[ValidatedBlock]:
    """A piece's validated blocks with their quarantine rows numbered within the file (moved on by the rows of
    the file's earlier pieces), the future released."""
    blocks = future.result()
    future.release()
    before = rows_of[path]
    for block in blocks:
        rows_of[path] += block.rows
        if before and len(block.validated.quarantined):
            quarantined = block.validated.quarantined.assign(
                **{ROW_NUMBER: block.validated.quarantined[ROW_NUMBER] + before}
            )
            block = replace(block, validated=replace(block.validated, quarantined=quarantined))
        yield block


def validate_piece(
    source: SourceSpec, piece: Piece, relation: RelationSpec, options: list[KeyNormalisation], blocksize: int
) -> list[ValidatedBlock]:
    """The task a worker runs: one piece read and validated, rows numbered within the piece, each axis's keys
    dictionary-encoded so that a key repeated in the piece travels once."""
    columns = reader_columns(source, relation_columns(relation))
    blocks = []
    for batch in read_piece(source, piece, columns, blocksize):
        validated = validate_batch(batch, relation, options)
        encoded = replace(validated, keys=[pc.dictionary_encode(keys) for keys in validated.keys])
        blocks.append(ValidatedBlock(batch.path, len(batch), batch.input_bytes, encoded))
    return blocks
