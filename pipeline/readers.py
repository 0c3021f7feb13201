"""Read a data source into a Dask DataFrame of strings, one row per data row of the file, none ever dropped.

Every value is read as a string so keys stay exact ("007" stays "007"); parsing numbers is validation's job.
Each row also carries `source_file` and a 1-based `row_number` counting the data rows of the file across all
partitions, so an error report can point at it. A row that cannot be split into the expected fields (wrong
number of CSV fields, invalid JSON, bytes not valid in the encoding, an empty line) is kept with its reason in
`read_error` and its text in `raw_record`, for validation to quarantine.

CSV/TSV and JSON lines are parsed here, block by block, because pandas' and pyarrow's CSV parsers either fail on
a row with too many fields, skip it, or pad a row with too few, losing its position. Files are split into blocks
at line breaks, so a quoted field holding a line break must not straddle a block boundary (raise `blocksize`
for such files). Parquet goes through `dask.dataframe.read_parquet`.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import dask
import dask.dataframe as dd
import pandas as pd
import pyarrow.parquet as pq
from dask.bytes import read_bytes

from hyperlearn.pipeline.spec import SourceSpec

SOURCE_FILE = "source_file"
ROW_NUMBER = "row_number"
READ_ERROR = "read_error"
RAW_RECORD = "raw_record"
RESERVED_COLUMNS = (SOURCE_FILE, ROW_NUMBER, READ_ERROR, RAW_RECORD)
DEFAULT_BLOCKSIZE = 64 * 2**20

_UNDECODABLE = re.compile("[\udc80-\udcff]")  # bytes that failed to decode, kept by errors="surrogateescape"
_BYTE_ORDER_MARK = "\ufeff"  # written by some tools at the start of a file; never data


# A parser turns decoded text into (needed field values, error or None, the raw record) per data row.
Records = Iterator[tuple[list[str | None], str | None, Any]]
Parser = Callable[[str, list[str]], Records]


class SourceError(ValueError):
    """A source that cannot be read as its spec says; the message names the file (and the column)."""


def read_source(
    source: SourceSpec, columns_needed: Sequence[str], blocksize: int = DEFAULT_BLOCKSIZE
) -> dd.DataFrame:
    """The needed columns of `source` as strings (missing: NaN), plus source_file, row_number, read_error and
    raw_record. Raise SourceError when a needed column is not in the file."""
    columns = list(dict.fromkeys(columns_needed))
    for column in columns:
        if column in RESERVED_COLUMNS:
            raise SourceError(f"{source.path}: column name {column!r} is reserved by the reader; rename it")
    if source.format in ("csv", "tsv"):
        frame = _read_delimited(source, columns, blocksize)
    elif source.format == "jsonl":
        frame = _read_blocks(source, columns, blocksize, _parse_jsonl)
    else:
        frame = _read_parquet(source, columns)
    return frame.assign(**{ROW_NUMBER: frame[ROW_NUMBER].cumsum()})  # per-row ones → global 1-based count


def _read_delimited(source: SourceSpec, columns: list[str], blocksize: int) -> dd.DataFrame:
    fields = source.names if source.names is not None else _header(source)
    for column in columns:
        if column not in fields:
            raise SourceError(f"{source.path}: column {column!r} not found; the columns are {list(fields)}")
        if fields.count(column) > 1:
            raise SourceError(f"{source.path}: column {column!r} appears {fields.count(column)} times in the header")
    parse = functools.partial(_parse_delimited, fields=tuple(fields), delimiter=source.delimiter)
    return _read_blocks(source, columns, blocksize, parse, skip_header=source.header)


def _header(source: SourceSpec) -> tuple[str, ...]:
    """The column names in the first row of a delimited file."""
    with open(source.path, encoding=source.encoding, errors="surrogateescape", newline="") as handle:
        header = next(csv.reader(handle, delimiter=source.delimiter), None)
    if not header:
        raise SourceError(f"{source.path}: empty first row, expected a header (or set header: false and names)")
    header[0] = header[0].removeprefix(_BYTE_ORDER_MARK)
    if any(_UNDECODABLE.search(name) for name in header):
        raise SourceError(f"{source.path}: the header row has bytes not valid in encoding {source.encoding}")
    return tuple(header)


def _read_blocks(
    source: SourceSpec, columns: list[str], blocksize: int, parse: Parser, skip_header: bool = False
) -> dd.DataFrame:
    """Parse a text file block by block (blocks end at line breaks), one partition per block."""
    splittable = "\n".encode(source.encoding) == b"\n"  # not for UTF-16/32: b"\n" is not a line break there
    _, (blocks,) = read_bytes(
        str(source.path), delimiter=b"\n", blocksize=blocksize if splittable else None, sample=False
    )
    meta = _frame({column: [] for column in columns}, [], [], str(source.path))
    if not blocks:
        return dd.from_pandas(meta, npartitions=1)
    parts = [
        dask.delayed(_parse_block)(
            block, parse, columns, str(source.path), source.encoding, first=index == 0, skip_header=skip_header
        )
        for index, block in enumerate(blocks)
    ]
    return dd.from_delayed(parts, meta=meta, verify_meta=False)


def _parse_block(
    block: bytes, parse: Parser, columns: list[str], path: str, encoding: str, first: bool, skip_header: bool
) -> pd.DataFrame:
    """One block as the reader's frame: decode, split into records, keep failed records with their reason."""
    try:
        text, check_bytes = block.decode(encoding), False
    except UnicodeDecodeError:
        text, check_bytes = block.decode(encoding, errors="surrogateescape"), True
    if first:
        text = text.removeprefix(_BYTE_ORDER_MARK)
        if skip_header:
            text = text.partition("\n")[2]
    values: dict[str, list] = {column: [] for column in columns}
    errors: list[str | None] = []
    raws: list[str | None] = []
    for record, error, raw in parse(text, columns):
        if error is None and check_bytes and any(_UNDECODABLE.search(v) for v in record if v is not None):
            error = f"bytes not valid in encoding {encoding}"
        for column, value in zip(columns, record if error is None else [None] * len(columns)):
            values[column].append(value)
        errors.append(error)
        # ASCII escapes keep undecodable bytes (lone surrogates) writable; otherwise keep the text readable.
        raws.append(None if error is None else json.dumps(raw, ensure_ascii=check_bytes))
    return _frame(values, errors, raws, path)


def _parse_delimited(text: str, columns: list[str], fields: tuple[str, ...], delimiter: str) -> Records:
    """CSV/TSV text as records of the needed fields; a record with the wrong number of fields is an error."""
    positions = [fields.index(column) for column in columns]
    for record in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
        if len(record) == len(fields):
            yield [record[i] for i in positions], None, record
        elif not record:
            yield [], "empty line", record
        else:
            yield [], f"expected {len(fields)} fields, got {len(record)}", record


def _parse_jsonl(text: str, columns: list[str]) -> Records:
    """JSON-lines text as records of the needed fields (absent: None); a line that is no JSON object is an error."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for line in lines:
        line = line.removesuffix("\r")
        if not line.strip():
            yield [], "empty line", line
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            yield [], f"invalid JSON: {error.msg} at column {error.colno}", line
            continue
        if not isinstance(row, dict):
            yield [], f"expected a JSON object, got {type(row).__name__}", line
            continue
        yield [_json_text(row.get(column)) for column in columns], None, row


def _json_text(value: Any) -> str | None:
    """A JSON value as the string it was written as: strings as is, numbers and booleans in JSON notation."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def _frame(values: dict[str, list], errors: list, raws: list, path: str) -> pd.DataFrame:
    """A parsed block as the reader's frame; row_number holds ones until read_source sums them up."""
    frame = pd.DataFrame({column: pd.Series(column_values, dtype="str") for column, column_values in values.items()})
    frame[SOURCE_FILE] = pd.Series([path] * len(errors), dtype="str")
    frame[ROW_NUMBER] = pd.Series(1, index=range(len(errors)), dtype="int64")
    frame[READ_ERROR] = pd.Series(errors, dtype="str")
    frame[RAW_RECORD] = pd.Series(raws, dtype="str")
    return frame


def _read_parquet(source: SourceSpec, columns: list[str]) -> dd.DataFrame:
    available = pq.read_schema(source.path).names
    for column in columns:
        if column not in available:
            raise SourceError(f"{source.path}: column {column!r} not found; the columns are {available}")
    frame = dd.read_parquet(str(source.path), columns=columns)
    meta = _frame({column: [] for column in columns}, [], [], str(source.path))
    return frame.map_partitions(_parquet_strings, str(source.path), meta=meta)


def _parquet_strings(part: pd.DataFrame, path: str) -> pd.DataFrame:
    """A Parquet partition with every column as text (nulls stay missing) and the reader's extra columns."""
    values = {column: part[column].astype("str").where(part[column].notna()).tolist() for column in part.columns}
    return _frame(values, [None] * len(part), [None] * len(part), path)
