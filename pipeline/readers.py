"""Read a data source as batches of string columns, one row per physical data row, none ever dropped.

Every value is read as a string so keys stay exact ("007" stays "007"); parsing numbers is validation's job.
Each row carries a 1-based `row_number` counting the data rows of its file, so an error report can point at it.
A row that cannot be split into the expected fields (wrong number of CSV fields, a quote left open, invalid
JSON, bytes not valid in the encoding, an empty line) is kept with its reason in `read_error` and its text in
`raw_record`, for validation to quarantine.

One physical line is one row: a quoted field may hold the separator but never a line break, so a stray `"`
spoils its own line only and row numbers always match the file's lines. CSV/TSV is split into lines and fields
with Arrow compute kernels over whole blocks; only lines holding a quote or undecodable bytes go through
Python's csv module, one line at a time. JSON lines are parsed line by line with `json`. Parquet is read in
record batches with integer keys kept as integer text. A source path may be a file, a folder (its files with
the format's suffixes, sorted) or a glob; `source_files` lists what it names.

A file is read in pieces (`file_pieces`): byte ranges of whole data lines of a text file, each one batch; runs
of whole row groups of a Parquet file, each about as big as a text piece; or the whole file for UTF-16/32 text.
`read_piece` reads one piece on its own, numbering its rows from 1, which is what lets the pieces be read by
different processes (`hyperlearn.pipeline.cluster_reading`); `read_file` reads them in order and numbers rows
across the file, so both give the same batches.
"""

from __future__ import annotations

import codecs
import csv
import functools
import glob
import json
import math
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from hyperlearn.pipeline.spec import SUFFIX_FORMATS, SourceSpec

SOURCE_FILE = "source_file"
ROW_NUMBER = "row_number"
READ_ERROR = "read_error"
RAW_RECORD = "raw_record"
RESERVED_COLUMNS = (SOURCE_FILE, ROW_NUMBER, READ_ERROR, RAW_RECORD)
DEFAULT_BLOCKSIZE = 64 * 2**20
PARSE_THREADS = 2

_BYTE_ORDER_MARK = "\ufeff"  # written by some tools at the start of a file; never data
_GLOB_CHARACTERS = frozenset("*?[")
_ESTIMATE_SAMPLE_BYTES = 2**20


class SourceError(ValueError):
    """A source that cannot be read as its spec says; the message names the file (and the column)."""


@dataclass(frozen=True)
class Batch:
    """Consecutive rows of one file: the needed columns (string, null where absent or unreadable),
    row_number (int64), read_error and raw_record (string, null for rows that were read); `input_bytes` is
    about how much of the file they took (for progress bars)."""

    path: str
    rows: pa.Table
    input_bytes: int = 0

    def __len__(self) -> int:
        return self.rows.num_rows


def source_files(source: SourceSpec) -> list[Path]:
    """The files a source names: the file itself, a folder's files with the format's suffixes, or a glob's
    matches, sorted. Raise SourceError naming the path when it names no readable file."""
    path = Path(source.path)
    if _GLOB_CHARACTERS & set(str(path)):
        files = sorted(Path(match) for match in glob.glob(str(path)) if Path(match).is_file())
        if not files:
            raise SourceError(f"{path}: the pattern matches no file")
        return files
    if path.is_dir():
        suffixes = {suffix for suffix, format_ in SUFFIX_FORMATS.items() if format_ == source.format}
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
        if not files:
            raise SourceError(f"{path}: is a directory holding no {source.format} file ({', '.join(sorted(suffixes))})")
        return files
    if not path.exists():
        raise SourceError(f"{path}: file not found")
    if not path.is_file():
        raise SourceError(f"{path}: is not a regular file")
    return [path]


def read_batches(
    source: SourceSpec, columns_needed: Sequence[str], blocksize: int = DEFAULT_BLOCKSIZE
) -> Iterator[Batch]:
    """The needed columns of every file of `source`, batch by batch (about `blocksize` bytes of input each),
    in file order. Raise SourceError when a file lacks a needed column or is not in the source's format."""
    columns = reader_columns(source, columns_needed)
    for path in source_files(source):
        yield from read_file(source, path, columns, blocksize)


def reader_columns(source: SourceSpec, columns_needed: Sequence[str]) -> list[str]:
    """The distinct columns to read, in order; SourceError for a name the reader reserves for its own columns."""
    columns = list(dict.fromkeys(columns_needed))
    for column in columns:
        if column in RESERVED_COLUMNS:
            raise SourceError(f"{source.path}: column name {column!r} is reserved by the reader; rename it")
    return columns


@dataclass(frozen=True)
class Piece:
    """A part of one file of a source that is read on its own: the bytes [start, end) of whole data lines of a
    text file (one batch), the row groups [start, end) of a Parquet file, or the whole text file (end None) in an
    encoding where b"\\n" is no line break; `fields` are a delimited file's field names (from its header or the
    spec)."""

    path: Path
    start: int = 0
    end: int | None = None
    fields: tuple[str, ...] | None = None


def file_pieces(source: SourceSpec, path: Path, columns: list[str], blocksize: int) -> list[Piece]:
    """The pieces of one file of `source`, in order (the pieces `read_file` reads): whole-line blocks of about
    `blocksize` bytes after any byte order mark and header, or runs of whole Parquet row groups
    (`_row_group_runs`). Raise SourceError when the file lacks a needed column, is not in the source's format,
    or has a header row but no data rows."""
    if source.format == "parquet":
        parquet = _parquet_file(path)
        _check_columns(path, columns, parquet.schema_arrow.names)
        return [Piece(path, start, end) for start, end in _row_group_runs(parquet.metadata, columns, blocksize)]
    fields = source.names
    if source.format in ("csv", "tsv"):
        if source.header:
            header = _header(path, source)
            fields = fields if fields is not None else header
        _check_columns(path, columns, fields)
    fields = None if fields is None else tuple(fields)
    if "\n".encode(source.encoding) != b"\n":
        pieces = [Piece(path, fields=fields)]
    else:
        pieces = [Piece(path, start, end, fields) for start, end in _line_blocks(path, blocksize, _skips_header(source))]
    if not pieces:
        check_rows_read(source, path, 0)
    return pieces


def check_rows_read(source: SourceSpec, path: Path, rows: int) -> None:
    """Raise SourceError when a file with a header row held `rows` == 0 data rows."""
    if _skips_header(source) and rows == 0:
        raise SourceError(f"{path}: has a header row but no data rows")


def read_piece(source: SourceSpec, piece: Piece, columns: list[str], blocksize: int) -> Iterator[Batch]:
    """The batches of one piece (see file_pieces), rows numbered from 1 within the piece."""
    if source.format == "parquet":
        yield from _parquet_batches(piece.path, columns, blocksize, range(piece.start, piece.end))
        return
    text = _piece_text(source, piece)
    if text:
        rows, size = _parse_block(text, source=source, columns=columns, fields=piece.fields)
        yield _numbered(piece.path, rows, size, columns)


def read_file(source: SourceSpec, path: Path, columns: list[str], blocksize: int) -> Iterator[Batch]:
    """The batches of one file of `source` (see read_batches): its pieces in order, text pieces parsed
    PARSE_THREADS at a time, Parquet pieces streamed batch by batch (a row group may be large, and the Parquet
    reader decodes on threads of its own)."""
    pieces = file_pieces(source, path, columns, blocksize)
    if source.format == "parquet":
        piece_batches: Iterator[Iterable[Batch]] = (read_piece(source, piece, columns, blocksize) for piece in pieces)
    else:
        read = functools.partial(_piece_batches, source=source, columns=columns, blocksize=blocksize)
        piece_batches = _ordered_map(read, iter(pieces))
    row = 0
    for batches in piece_batches:
        before = row
        for batch in batches:
            yield renumbered(batch, before)
            row += len(batch)
    check_rows_read(source, path, row)


def _piece_batches(piece: Piece, source: SourceSpec, columns: list[str], blocksize: int) -> list[Batch]:
    return list(read_piece(source, piece, columns, blocksize))


def renumbered(batch: Batch, before: int) -> Batch:
    """A batch of a piece with its row numbers moved on by the `before` rows of the file's earlier pieces."""
    if not before:
        return batch
    position = batch.rows.column_names.index(ROW_NUMBER)
    numbers = pc.add(batch.rows.column(ROW_NUMBER), pa.scalar(before, pa.int64()))
    return Batch(batch.path, batch.rows.set_column(position, ROW_NUMBER, numbers), batch.input_bytes)


def _numbered(path: Path, rows: pa.Table, size: int, columns: list[str]) -> Batch:
    """Parsed rows as a Batch, numbered from 1."""
    numbers = pa.array(np.arange(1, 1 + rows.num_rows, dtype=np.int64))
    rows = rows.append_column(ROW_NUMBER, numbers)
    return Batch(str(path), rows.select([*columns, ROW_NUMBER, READ_ERROR, RAW_RECORD]), size)


def estimated_rows(source: SourceSpec, paths: Sequence[Path]) -> int:
    """About how many rows the files of a source hold, to plan memory before reading: Parquet says; for text,
    the lines of each file's first MiB tell the bytes per line (with a quarter more for safety)."""
    if source.format == "parquet":
        return sum(_parquet_file(path).metadata.num_rows for path in paths)
    rows = 0
    for path in paths:
        with open(path, "rb") as handle:
            sample = handle.read(_ESTIMATE_SAMPLE_BYTES)
        per_line = len(sample) / max(1, sample.count(b"\n"))
        rows += math.ceil(1.25 * Path(path).stat().st_size / max(per_line, 1.0))
    return rows


def read_source(
    source: SourceSpec, columns_needed: Sequence[str], blocksize: int = DEFAULT_BLOCKSIZE
) -> pd.DataFrame:
    """The needed columns of `source` as one pandas frame of strings (missing: NaN), its files' rows in order,
    plus source_file, row_number, read_error and raw_record. Raise SourceError when a needed column is missing.
    For side data (features, pairs), read whole; relations go through ingest's out-of-core path instead."""
    columns = list(dict.fromkeys(columns_needed))
    files = source_files(source)
    if source.format == "parquet":
        for path in files:
            _check_columns(path, columns, _parquet_file(path).schema_arrow.names)
    frames = [_file_frame(source, path, columns, blocksize) for path in files]
    return pd.concat(frames, ignore_index=True) if frames else batch_frame(Batch("", _empty_rows(columns)))


def _file_frame(source: SourceSpec, path: Path, columns: list[str], blocksize: int) -> pd.DataFrame:
    frames = [batch_frame(batch) for batch in read_file(source, path, columns, blocksize)]
    return pd.concat(frames, ignore_index=True) if frames else batch_frame(Batch(str(path), _empty_rows(columns)))


def batch_frame(batch: Batch) -> pd.DataFrame:
    """A batch as a pandas frame of str columns (missing: NaN) with its source_file column."""
    frame = pd.DataFrame(
        {
            name: pd.Series(
                batch.rows.column(name).to_numpy(zero_copy_only=False), dtype="int64" if name == ROW_NUMBER else "str"
            )
            for name in batch.rows.column_names
        }
    )
    frame.insert(len(frame.columns) - 3, SOURCE_FILE, pd.Series([batch.path] * len(frame), dtype="str"))
    return frame


def _empty_rows(columns: list[str]) -> pa.Table:
    table = _rows_table({column: pa.array([], pa.string()) for column in columns}, {}, {}, 0)
    table = table.append_column(ROW_NUMBER, pa.array([], pa.int64()))
    return table.select([*columns, ROW_NUMBER, READ_ERROR, RAW_RECORD])


def _rows_table(values: dict[str, pa.Array], errors: dict[int, str], raws: dict[int, str], rows: int) -> pa.Table:
    """The reader's columns of `rows` rows; `errors` and `raws` hold the failed rows' texts by position."""
    return pa.table({**values, READ_ERROR: _sparse_strings(errors, rows), RAW_RECORD: _sparse_strings(raws, rows)})


def _sparse_strings(texts: dict[int, str], rows: int) -> pa.Array:
    """A string array of `rows` rows, null except at the positions in `texts`."""
    if not texts:
        return pa.nulls(rows, pa.string())
    index = np.zeros(rows, dtype=np.int64)
    missing = np.ones(rows, dtype=bool)
    index[list(texts)] = np.arange(len(texts))
    missing[list(texts)] = False
    return pa.array(list(texts.values()), pa.string()).take(pa.array(index, mask=missing))


def _check_columns(path: Path, columns: list[str], fields: Sequence[str]) -> None:
    fields = list(fields)
    for column in columns:
        if column not in fields:
            raise SourceError(f"{path}: column {column!r} not found; the columns are {fields}")
        if fields.count(column) > 1:
            raise SourceError(f"{path}: column {column!r} appears {fields.count(column)} times in the header")


# --- text files: lines --------------------------------------------------------------------------------------


def _header(path: Path, source: SourceSpec) -> tuple[str, ...]:
    """The column names in the first row of a delimited file."""
    try:
        if "\n".encode(source.encoding) != b"\n":  # UTF-16/32: the line break is more than the byte b"\n"
            with open(path, encoding=source.encoding, newline="") as wide:
                text = wide.readline()
        else:
            with open(path, "rb") as handle:
                text = handle.readline().decode(source.encoding)
        text = text.removeprefix(_BYTE_ORDER_MARK).rstrip("\r\n")
    except UnicodeDecodeError:
        raise SourceError(f"{path}: the header row has bytes not valid in encoding {source.encoding}") from None
    header = next(csv.reader([text], delimiter=source.delimiter), None)
    if not header:
        raise SourceError(f"{path}: empty first row, expected a header (or set header: false and names)")
    return tuple(header)


@dataclass(frozen=True)
class Lines:
    """A block of whole lines: the block's bytes (undecodable lines and lines with a stray carriage return
    blanked with spaces), each line's text (a zero-copy view of the block, line break included), each line's
    length without its line break, and the blanked lines' reasons and bytes."""

    block: bytes
    text: pa.Array
    lengths: np.ndarray
    blanked: dict[int, tuple[str, bytes]]

    def __len__(self) -> int:
        return len(self.text)


def _ordered_map(function: Callable[[Any], Any], items: Iterator[Any]) -> Iterator[Any]:
    """`function` over `items` on PARSE_THREADS threads (Arrow and NumPy release the GIL), results in order,
    at most one item per thread ahead of the consumer so memory stays bounded."""
    with ThreadPoolExecutor(PARSE_THREADS) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) > PARSE_THREADS:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _parse_block(
    block: bytes, source: SourceSpec, columns: list[str], fields: Sequence[str] | None
) -> tuple[pa.Table, int]:
    """One UTF-8 block of whole lines as the reader's columns (without row numbers) and its size in bytes."""
    lines = _split_lines(block, source.encoding)
    if source.format == "jsonl":
        rows = _jsonl_rows(lines, columns)
    else:
        rows = _delimited_rows(lines, columns, fields, source.delimiter)
    return _mark_blanked(rows, lines, columns, None if source.format == "jsonl" else source.delimiter), len(block)


def _skips_header(source: SourceSpec) -> bool:
    return source.header and source.format in ("csv", "tsv")


def _piece_text(source: SourceSpec, piece: Piece) -> bytes:
    """A text piece's lines as UTF-8."""
    if piece.end is None:  # UTF-16/32: b"\n" is no line break there; read whole
        text = Path(piece.path).read_bytes().decode(source.encoding, errors="surrogateescape")
        text = text.removeprefix(_BYTE_ORDER_MARK)
        if _skips_header(source):
            text = text.partition("\n")[2]
        return text.encode("utf-8", errors="surrogateescape")
    with open(piece.path, "rb") as handle:
        handle.seek(piece.start)
        block = handle.read(piece.end - piece.start)
    return block if codecs.lookup(source.encoding).name in ("utf-8", "ascii") else _to_utf8(block, source.encoding)


def _line_blocks(path: Path, blocksize: int, skip_header: bool) -> list[tuple[int, int]]:
    """The byte ranges of a file's blocks of whole lines (each `blocksize` bytes, then to the end of the line
    it stops in), after a byte order mark and, when `skip_header`, the first line. Found by seeking, without
    reading the blocks."""
    with open(path, "rb") as handle:
        if handle.read(3) != _BYTE_ORDER_MARK.encode():
            handle.seek(0)
        if skip_header:
            handle.readline()
        start, size = handle.tell(), os.fstat(handle.fileno()).st_size
        blocks = []
        while start < size:
            end = start + blocksize
            if end < size:
                handle.seek(end - 1)
                if handle.read(1) != b"\n":
                    handle.readline()
                end = handle.tell()
            blocks.append((start, min(end, size)))
            start = min(end, size)
        return blocks


def _to_utf8(block: bytes, encoding: str) -> bytes:
    """A block in another ASCII-compatible encoding as UTF-8; undecodable bytes stay invalid UTF-8."""
    return block.decode(encoding, errors="surrogateescape").encode("utf-8", errors="surrogateescape")


def _split_lines(block: bytes, encoding: str) -> Lines:
    """One UTF-8 block of whole lines as Lines: zero-copy offsets over the block."""
    data = np.frombuffer(block, dtype=np.uint8)
    breaks = np.flatnonzero(data == 10)
    ends = breaks if block.endswith(b"\n") else np.append(breaks, len(block))
    starts = np.concatenate(([0], breaks + 1))[: len(ends)]
    ends = ends - ((ends > starts) & (data[np.maximum(ends - 1, 0)] == 13))  # a CR before the LF is no data
    blanked = _blanked_lines(block, data, starts, ends, encoding)
    if blanked:
        writable = data.copy()
        for position in blanked:
            writable[starts[position] : ends[position]] = 32
        block, data = writable.tobytes(), writable
    offsets = np.append(starts, len(block)).astype(np.int64)
    text = pa.LargeStringArray.from_buffers(len(starts), pa.py_buffer(offsets), pa.py_buffer(block))
    return Lines(block, text, ends - starts, blanked)


def _blanked_lines(
    block: bytes, data: np.ndarray, starts: np.ndarray, ends: np.ndarray, encoding: str
) -> dict[int, tuple[str, bytes]]:
    """The lines of `block` that cannot be parsed as text, by position: (reason, bytes). Those are lines
    holding a carriage return that does not end them and, when the block is not valid UTF-8, the lines that
    are not (only lines with bytes above 127 are checked)."""
    suspects = np.flatnonzero(data == 13) if block.find(b"\r") >= 0 else np.empty(0, dtype=np.int64)
    suspects = suspects[~np.isin(suspects, ends)]  # a CR right before the line break ends the line
    undecodable = False
    if not block.isascii():
        try:
            block.decode("utf-8")
        except UnicodeDecodeError:
            undecodable = True
            suspects = np.concatenate((suspects, np.flatnonzero(data >= 128)))
    if not len(suspects):
        return {}
    blanked = {}
    for line in np.unique(np.searchsorted(starts, suspects, side="right") - 1).tolist():
        text = block[starts[line] : ends[line]]
        if b"\r" in text:
            blanked[line] = ("carriage return inside the line", text)
            continue
        if undecodable:
            try:
                text.decode("utf-8")
            except UnicodeDecodeError:
                blanked[line] = (f"bytes not valid in encoding {encoding}", text)
    return blanked


def _mark_blanked(rows: pa.Table, lines: Lines, columns: list[str], delimiter: str | None) -> pa.Table:
    """`rows` with the blanked lines as read errors; their raw record keeps undecodable bytes as ASCII escapes."""
    if not lines.blanked:
        return rows
    failed = np.zeros(len(rows), dtype=bool)
    failed[list(lines.blanked)] = True
    errors = _dense_strings(rows.column(READ_ERROR))
    raws = _dense_strings(rows.column(RAW_RECORD))
    for position, (reason, raw) in lines.blanked.items():
        text = raw.decode("utf-8", errors="surrogateescape")
        errors[position] = reason
        raws[position] = json.dumps(_fields_of(text, delimiter) if delimiter else text, ensure_ascii=True)
    mask = pa.array(failed)
    values = {column: pc.if_else(mask, pa.scalar(None, pa.string()), rows.column(column)) for column in columns}
    return _rows_table(values, errors, raws, len(rows))


def _dense_strings(array: pa.ChunkedArray) -> dict[int, str]:
    """The non-null values of a string column by position (the inverse of _sparse_strings)."""
    present = np.flatnonzero(array.is_valid().to_numpy(zero_copy_only=False))
    return dict(zip(present.tolist(), array.take(pa.array(present)).to_pylist()))


# --- CSV / TSV ------------------------------------------------------------------------------------------------


def _delimited_rows(lines: Lines, columns: list[str], fields: Sequence[str], delimiter: str) -> pa.Table:
    """Lines of a delimited file as the needed fields; a row with the wrong number of fields, an open quote
    or nothing on it is an error.

    Arrow's CSV parser reads the block with quoting off, so that each non-empty line is one record whose
    number maps back to its line; the lines holding a quote are then parsed again one by one by the csv
    module, with quoting on."""
    width = len(fields)
    nonempty = np.flatnonzero(lines.lengths > 0)
    skipped: list[tuple[int, int]] = []
    table = _arrow_csv(lines.block, columns, fields, delimiter, skipped)
    parsed = np.zeros(len(lines), dtype=bool)
    parsed[nonempty] = True
    errors: dict[int, str] = {int(p): "empty line" for p in np.flatnonzero(lines.lengths == 0)}
    raws: dict[int, str] = {}
    for number, count in skipped:
        position = int(nonempty[number - 1])
        parsed[position] = False
        errors[position] = f"expected {width} fields, got {count}"
        raws[position] = json.dumps(_fields_of(_line(lines.text, position), delimiter), ensure_ascii=False)
    if table.num_rows != int(parsed.sum()):
        raise SourceError(f"Arrow read {table.num_rows} records where {int(parsed.sum())} lines have {width} fields")
    values = {column: table.column(column) for column in columns}
    if not parsed.all():
        index = pa.array(np.cumsum(parsed) - 1, mask=~parsed)
        values = {column: array.take(index) for column, array in values.items()}
    quoted = _quoted_lines(lines)
    if len(quoted):
        values = _quoted_rows(lines.text, quoted, values, errors, raws, width, fields, columns, delimiter)
    if errors:
        failed = np.zeros(len(lines), dtype=bool)
        failed[list(errors)] = True
        mask = pa.array(failed)
        values = {column: pc.if_else(mask, pa.scalar(None, pa.string()), array) for column, array in values.items()}
    return _rows_table(values, errors, raws, len(lines))


def _quoted_lines(lines: Lines) -> np.ndarray:
    """Positions of the lines holding a double quote."""
    if lines.block.find(b'"') < 0:
        return np.empty(0, dtype=np.int64)
    quotes = np.flatnonzero(np.frombuffer(lines.block, dtype=np.uint8) == 34)
    offsets = np.frombuffer(lines.text.buffers()[1], dtype=np.int64)[: len(lines) + 1]
    return np.unique(np.searchsorted(offsets, quotes, side="right") - 1)


def _arrow_csv(
    block: bytes, columns: list[str], fields: Sequence[str], delimiter: str, skipped: list[tuple[int, int]]
) -> pa.Table:
    """The needed columns of the records of `block` that have the right number of fields, as strings; the
    others are appended to `skipped` as (number among the non-empty lines, fields found)."""

    def skip(row: pacsv.InvalidRow) -> str:
        skipped.append((row.number, row.actual_columns))
        return "skip"

    return pacsv.read_csv(
        pa.BufferReader(block),
        read_options=pacsv.ReadOptions(column_names=list(fields), use_threads=False, block_size=16 * 2**20),
        parse_options=pacsv.ParseOptions(
            delimiter=delimiter,
            quote_char=False,
            newlines_in_values=False,
            ignore_empty_lines=True,
            invalid_row_handler=skip,
        ),
        convert_options=pacsv.ConvertOptions(
            column_types={column: pa.string() for column in columns},
            include_columns=columns,
            strings_can_be_null=False,
        ),
    )


def _quoted_rows(
    text: pa.Array,
    quoted: np.ndarray,
    values: dict[str, pa.Array],
    errors: dict[int, str],
    raws: dict[int, str],
    width: int,
    fields: Sequence[str],
    columns: list[str],
    delimiter: str,
) -> dict[str, pa.Array]:
    """Parse the lines at `quoted` one by one with the csv module (strict quoting), setting or clearing their
    errors and raw records; return the needed columns with those lines' values."""
    positions = [list(fields).index(column) for column in columns]
    result = {column: values[column].to_numpy(zero_copy_only=False).astype(object) for column in columns}
    for position in quoted.tolist():
        line = _line(text, position)
        errors.pop(position, None)
        raws.pop(position, None)
        try:
            record = next(csv.reader([line], delimiter=delimiter, strict=True), [])
        except csv.Error as error:
            errors[position] = f"malformed quoting: {error}"
            raws[position] = json.dumps(line, ensure_ascii=False)
            continue
        if len(record) != width:
            errors[position] = f"expected {width} fields, got {len(record)}"
            raws[position] = json.dumps(record, ensure_ascii=False)
            continue
        for column, p in zip(columns, positions):
            result[column][position] = record[p]
    return {column: pa.array(column_values, pa.string()) for column, column_values in result.items()}


def _line(text: pa.Array, position: int) -> str:
    """One line of a Lines text without its line break."""
    return text[position].as_py().rstrip("\r\n")


def _fields_of(line: str, delimiter: str) -> list[str] | str:
    """A line's fields as the csv module splits them (quoting lenient), or the line itself when it cannot."""
    try:
        return next(csv.reader([line], delimiter=delimiter), [])
    except csv.Error:
        return line


# --- JSON lines -----------------------------------------------------------------------------------------------


def _jsonl_rows(lines: Lines, columns: list[str]) -> pa.Table:
    """JSON lines as the needed fields (absent: null); a line that is no JSON object is an error.

    Arrow's JSON reader parses the block when it can read every line as one object; a block it cannot (a bad
    line, a blank line, a field whose type changes) is parsed line by line with `json`, which names each bad
    line. Both give a value its JSON text: strings as they are, integers and booleans as written, other
    numbers as Python writes the float (4.0 → "4.0"). One difference: in a column mixing integers and decimals
    Arrow reads the integers as floats ("4.0"); values parse the same, keys should be strings or integers."""
    table = _arrow_jsonl(lines, columns)
    if table is not None:
        return table
    values: dict[str, list] = {column: [] for column in columns}
    errors: dict[int, str] = {}
    raws: dict[int, str] = {}
    for position, line in enumerate(lines.text.to_pylist()):
        line = line.rstrip("\r\n")
        record, error = _json_record(line, columns)
        for column, value in zip(columns, record):
            values[column].append(value)
        if error is not None:
            errors[position] = error
            raws[position] = json.dumps(line, ensure_ascii=False)
    return _rows_table({column: pa.array(v, pa.string()) for column, v in values.items()}, errors, raws, len(lines))


def _arrow_jsonl(lines: Lines, columns: list[str]) -> pa.Table | None:
    """The block read by Arrow's JSON reader as the needed fields in their JSON text, or None when Arrow cannot
    read it as exactly one object per line with fields of text, integer, boolean or float type."""
    if lines.blanked or not (lines.lengths > 0).all() or not len(lines):
        return None
    try:
        table = pajson.read_json(
            pa.BufferReader(lines.block),
            read_options=pajson.ReadOptions(use_threads=False, block_size=len(lines.block) + 1),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != len(lines):
        return None
    values = {}
    for column in columns:
        if column not in table.column_names:
            values[column] = pa.nulls(len(lines), pa.string())
            continue
        text = _json_column_text(table.column(column).combine_chunks())
        if text is None:
            return None
        values[column] = text
    return _rows_table(values, {}, {}, len(lines))


def _json_column_text(array: pa.Array) -> pa.Array | None:
    """A column Arrow parsed from JSON as the text `_json_text` gives its values, or None for a type (object,
    list) that is not read as text."""
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return array.cast(pa.string())
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind) or pa.types.is_null(kind):
        return array.cast(pa.string())
    if pa.types.is_floating(kind):
        encoded = pc.dictionary_encode(array)  # Python's float text, computed once per distinct value
        texts = pa.array([_json_text(value) for value in encoded.dictionary.to_pylist()], pa.string())
        return texts.take(encoded.indices)
    return None


def _json_record(line: str, columns: list[str]) -> tuple[list[str | None], str | None]:
    nothing = [None] * len(columns)
    if not line.strip():
        return nothing, "empty line"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        return nothing, f"invalid JSON: {error.msg} at column {error.colno}"
    except RecursionError:
        return nothing, "invalid JSON: nested too deeply"
    if not isinstance(row, dict):
        return nothing, f"expected a JSON object, got {type(row).__name__}"
    return [_json_text(row.get(column)) for column in columns], None


def _json_text(value: Any) -> str | None:
    """A JSON value as the string it was written as: strings as is, numbers and booleans in JSON notation."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


# --- Parquet ----------------------------------------------------------------------------------------------------


def _parquet_file(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise SourceError(f"{path}: not a Parquet file ({error})") from None


def _parquet_rows_per_batch(blocksize: int) -> int:
    """The rows of a Parquet read batch: about `blocksize` bytes of rows, taking a row as 64 bytes once read."""
    return max(1, blocksize // 64)


def _row_group_runs(metadata: pq.FileMetaData, columns: list[str], blocksize: int) -> list[tuple[int, int]]:
    """A Parquet file's row groups cut into runs [start, end) of whole groups, in order: a run ends at the first
    group that brings it to `blocksize` bytes of the needed columns (uncompressed, as the metadata counts them)
    or to a read batch's rows, whichever comes first, so a run is about as big as a text piece. Both limits
    count: dictionary-encoded columns are far smaller in the file than once read as text, wide rows far bigger
    than 64 bytes."""
    wanted = set(columns)
    rows_limit = _parquet_rows_per_batch(blocksize)
    runs, start, size, rows = [], 0, 0, 0
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        chunks = (group.column(i) for i in range(group.num_columns))
        size += sum(chunk.total_uncompressed_size for chunk in chunks if chunk.path_in_schema in wanted)
        rows += group.num_rows
        if size >= blocksize or rows >= rows_limit:
            runs.append((start, index + 1))
            start, size, rows = index + 1, 0, 0
    if start < metadata.num_row_groups:
        runs.append((start, metadata.num_row_groups))
    return runs


def _parquet_batches(path: Path, columns: list[str], blocksize: int, row_groups: range) -> Iterator[Batch]:
    """Row groups of a Parquet file (its columns checked by file_pieces) in record batches, numbered from 1, every
    column as text (integers as integer text, nulls missing)."""
    parquet = _parquet_file(path)
    bytes_per_row = Path(path).stat().st_size / max(1, parquet.metadata.num_rows)
    row = 0
    batches = parquet.iter_batches(batch_size=_parquet_rows_per_batch(blocksize), row_groups=row_groups,
                                   columns=columns)
    for batch in batches:
        values = {column: _as_text(batch.column(column), path, column) for column in columns}
        rows = _rows_table(values, {}, {}, batch.num_rows)
        rows = rows.append_column(ROW_NUMBER, pa.array(np.arange(row + 1, row + 1 + batch.num_rows, dtype=np.int64)))
        row += batch.num_rows
        rows = rows.select([*columns, ROW_NUMBER, READ_ERROR, RAW_RECORD])
        yield Batch(str(path), rows, round(bytes_per_row * batch.num_rows))


def _as_text(array: pa.Array, path: Path, column: str) -> pa.Array:
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    try:
        return array.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise SourceError(f"{path}: column {column!r} of type {array.type} cannot be read as text: {error}") from None
