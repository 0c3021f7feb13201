"""Per-row validation: every row read is either accepted or quarantined with the field and reason of its first
problem, never dropped.

Relation sources are validated batch by batch on Arrow arrays (`validate_batch`); side data read into pandas go
through `RowChecks`, which applies the same key and number rules. Keys are normalised per modality (strip +
Unicode NFC by default, casefold optional, NUL characters removed) by `normalise_keys`, so keys that differ
only by such details name one entity. Quarantined rows are written to Parquet (source_file, row_number, field,
reason, raw) so that rows_read == rows_accepted + rows_quarantined can be checked and every rejected row found
in its file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hyperlearn.pipeline.readers import RAW_RECORD, READ_ERROR, ROW_NUMBER, SOURCE_FILE, Batch, read_batches
from hyperlearn.pipeline.spec import KeyNormalisation, ModalitySpec, RelationSpec, SourceSpec

ROW_FIELD = "(row)"  # the `field` of a problem with the row as a whole, e.g. a wrong number of fields
FIELD, REASON, RAW = "field", "reason", "raw"
VALUE, TIME = "value", "time"
KEY_LENGTH_LIMIT = 131_072  # characters; a longer "key" is a broken row (e.g. a whole file in one field)
FLOAT32_MAX = float(np.finfo(np.float32).max)  # relation values are stored as float32
QUARANTINE_SCHEMA = pa.schema(
    [
        (SOURCE_FILE, pa.string()),
        (ROW_NUMBER, pa.int64()),
        (FIELD, pa.string()),
        (REASON, pa.string()),
        (RAW, pa.string()),
    ]
)
_NUMBER = r"^[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|(?i:inf(inity)?|nan))$"


def key_column(axis: int) -> str:
    """Name of the validated key column of a relation's `axis`-th modality (spec order)."""
    return f"key_{axis}"


# --- keys -------------------------------------------------------------------------------------------------------


def key_options(modality: ModalitySpec) -> KeyNormalisation:
    """How `modality`'s keys are normalised (the spec's `keys:`, strip + NFC by default); NUL characters are
    always removed."""
    return modality.keys


def normalise_keys(keys: pa.Array, options: KeyNormalisation) -> pa.Array:
    """`keys` normalised by `options` (nulls stay null). Keys of printable ASCII without surrounding spaces
    only go through casefolding, so the common case costs one scan of the bytes."""
    data = _bytes(keys)
    if (data == 0).any():
        keys = pc.replace_substring(keys, "\x00", "")
    if options.strip and ((data <= 32) | (data >= 127)).any():
        keys = pc.utf8_trim_whitespace(keys)
    ascii_only = not (data >= 128).any()
    if options.unicode is not None and not ascii_only:
        keys = pc.utf8_normalize(keys, options.unicode)
    if options.casefold:
        keys = pc.utf8_lower(keys) if ascii_only else pa.array([_casefold(k) for k in keys.to_pylist()], pa.string())
    return keys


def _bytes(strings: pa.Array) -> np.ndarray:
    """The bytes of a string array's values (of its whole data buffer, a superset when it is a slice)."""
    buffer = strings.buffers()[2]
    return np.frombuffer(buffer, dtype=np.uint8) if buffer is not None else np.empty(0, dtype=np.uint8)


def _casefold(key: str | None) -> str | None:
    return None if key is None else key.casefold()


def key_problems(keys: pa.Array, normalised: pa.Array) -> list[tuple[np.ndarray, str]]:
    """(mask, reason) of each key check in priority order: missing, too long, empty once normalised."""
    missing = _mask(pc.is_null(keys))
    too_long = _mask(pc.greater(pc.binary_length(keys), KEY_LENGTH_LIMIT))  # bytes bound characters
    if too_long.any():
        too_long = _mask(pc.greater(pc.utf8_length(keys), KEY_LENGTH_LIMIT))
    empty = _mask(pc.equal(pc.binary_length(normalised), 0))
    return [
        (missing, "missing key"),
        (too_long, f"key longer than {KEY_LENGTH_LIMIT:,} characters"),
        (empty, "empty key"),
    ]


# --- numbers ----------------------------------------------------------------------------------------------------

NUMBER_OK, NUMBER_MISSING, NOT_A_NUMBER, NOT_FINITE, BEYOND_FLOAT32 = range(5)


def parse_numbers(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """float64 values of a string array (NaN where unusable) and one code per row: NUMBER_OK,
    NUMBER_MISSING (null or blank), NOT_A_NUMBER, NOT_FINITE, BEYOND_FLOAT32 (finite but no float32)."""
    values, blank, parsed = _parse_floats(text)
    codes = np.full(len(values), NUMBER_OK, dtype=np.int8)
    finite = np.isfinite(values)
    codes[~finite] = NOT_FINITE
    codes[finite & (np.abs(values) > FLOAT32_MAX)] = BEYOND_FLOAT32
    codes[~parsed] = NOT_A_NUMBER
    codes[blank] = NUMBER_MISSING
    values[codes != NUMBER_OK] = np.nan
    return values, codes


def number_problems(codes: np.ndarray, text: pa.Array) -> list[tuple[np.ndarray, Any]]:
    """(mask, reason) of each failure code of parse_numbers, in priority order; a reason quoting the value
    is a function of the failed positions."""
    return [
        (codes == NUMBER_MISSING, "missing value"),
        (codes == NOT_A_NUMBER, _quoting(text, "not a number: ")),
        (codes == NOT_FINITE, _quoting(text, "not a finite number: ")),
        (codes == BEYOND_FLOAT32, _quoting(text, "beyond the float32 range: ")),
    ]


def parse_times(text: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 seconds since 1970 (numbers as they are, else ISO 8601), whether each row is blank, and whether
    it parsed to a finite time."""
    seconds, blank, parsed = _parse_floats(text)
    dated = np.flatnonzero(~parsed & ~blank)
    if len(dated):
        strings = pd.Series(text.take(pa.array(dated)).to_pylist(), dtype="str")
        stamps = pd.to_datetime(strings, errors="coerce", utc=True, format="ISO8601")
        seconds[dated] = ((stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64)
    return seconds, blank, np.isfinite(seconds) & ~blank


def _parse_floats(text: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float64 values, NaN where not parsed; blank mask; parsed mask) of a string array."""
    data = _bytes(text)
    trimmed = pc.utf8_trim_whitespace(text) if ((data <= 32) | (data >= 127)).any() else text
    blank = _mask(pc.or_kleene(pc.is_null(trimmed), pc.equal(pc.binary_length(trimmed), 0)))
    try:
        return _floats(trimmed.cast(pa.float64())), blank, ~blank
    except pa.ArrowInvalid:
        parsed = _mask(pc.match_substring_regex(trimmed, _NUMBER)) & ~blank
        values = _floats(pc.if_else(pa.array(parsed), trimmed, pa.scalar("nan")).cast(pa.float64()))
        return values, blank, parsed


def _quoting(text: pa.Array, prefix: str, literal: bool = True) -> Any:
    """A reason function: `prefix` and each failed value, as a Python literal (shows blanks and odd characters)
    unless `literal` is false."""
    show = repr if literal else str
    return lambda positions: [prefix + show(value) for value in text.take(pa.array(positions, pa.int64())).to_pylist()]


def _floats(array: pa.Array) -> np.ndarray:
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.float64).copy()


def _mask(array: pa.Array) -> np.ndarray:
    return np.asarray(array.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


# --- relation batches -------------------------------------------------------------------------------------------


class Problems:
    """The first problem of each row of a batch (field, reason), filled check by check in priority order; a
    row that already failed is not checked again, so each quarantined row names exactly one problem."""

    def __init__(self, rows: int) -> None:
        self.failed = np.zeros(rows, dtype=bool)
        self.found: dict[int, tuple[str, str]] = {}

    def fail(self, mask: np.ndarray, field: str, reason: Any) -> None:
        """Mark rows in `mask` that had not failed yet; `reason` is a text or a function of the new positions
        giving one text each."""
        new = np.flatnonzero(mask & ~self.failed)
        if not len(new):
            return
        self.failed[new] = True
        reasons = reason(new.tolist()) if callable(reason) else [reason] * len(new)
        self.found.update(zip(new.tolist(), ((field, r) for r in reasons)))


@dataclass(frozen=True)
class ValidatedBatch:
    """A batch after validation: the tuples of the accepted rows, as normalised keys (one string array per
    axis), values and times (None when unused), in row order; `accepted` rows hold them (one tuple per row,
    or one per value of a multi-valued field). The quarantined rows are in the quarantine layout; `changed`
    holds, per axis, the accepted keys that normalisation changed (as read)."""

    keys: list[pa.Array]
    values: np.ndarray
    times: np.ndarray | None
    quarantined: pd.DataFrame
    changed: list[set[str]]
    accepted: int

    @property
    def tuples(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class ValidatedBlock:
    """One batch of a relation source after validation: its file, how many rows it holds, about how many bytes
    of input they took (for progress bars), and what validation made of them."""

    path: str
    rows: int
    input_bytes: int
    validated: ValidatedBatch


def validate_source(
    source: SourceSpec, relation: RelationSpec, options: list[KeyNormalisation], blocksize: int
) -> Iterator[ValidatedBlock]:
    """Every batch of `source` (read by `read_batches`, about `blocksize` bytes each) validated in this
    process, in file order."""
    for batch in read_batches(source, relation_columns(relation), blocksize=blocksize):
        yield ValidatedBlock(batch.path, len(batch), batch.input_bytes, validate_batch(batch, relation, options))


def validate_batch(batch: Batch, relation: RelationSpec, options: list[KeyNormalisation]) -> ValidatedBatch:
    """Validate one batch of a relation source read by `read_batches`; `options` are the key normalisations
    of the relation's modalities, in axis order."""
    rows = batch.rows
    problems = Problems(len(rows))
    errors = rows.column(READ_ERROR).combine_chunks()
    problems.fail(_mask(pc.is_valid(errors)), ROW_FIELD, lambda new: errors.take(pa.array(new)).to_pylist())
    keys = []
    values_of: dict[int, pa.ListArray] = {}
    for axis, (column, option) in enumerate(zip(relation.key_columns, options)):
        raw = rows.column(column).combine_chunks()
        normalised = normalise_keys(raw, option)
        for mask, reason in key_problems(raw, normalised):
            problems.fail(mask, column, reason)
        separator = relation.separator(axis)
        if separator is not None:
            values_of[axis] = split_values(normalised, separator, option)
            empty = _mask(pc.equal(pc.list_value_length(values_of[axis]), 0))
            problems.fail(empty, column, f"no value between the separators {separator!r}")
        keys.append((raw, normalised))
    if relation.value_column is None:
        values = np.full(len(rows), relation.value, dtype=np.float64)
    else:
        text = rows.column(relation.value_column).combine_chunks()
        values, codes = parse_numbers(text)
        for mask, reason in number_problems(codes, text):
            problems.fail(mask, relation.value_column, reason)
        if relation.loss == "logistic":
            outside = (values < 0) | (values > 1)
            message = "a logistic relation needs values in [0, 1], got "
            problems.fail(outside, relation.value_column, _quoting(text, message, literal=False))
    times = None
    if uses_time(relation):
        text = rows.column(relation.time).combine_chunks()
        times, blank, ok = parse_times(text)
        problems.fail(blank, relation.time, f"missing time (needed by duplicates: {relation.duplicates})")
        problems.fail(~ok, relation.time, _quoting(text, "unparseable time: "))
    passed = ~problems.failed
    accepted = pa.array(passed)
    changed = []
    for raw, normalised in keys:
        if normalised is raw:
            changed.append(set())
            continue
        differs = _mask(pc.not_equal(raw, normalised)) & ~problems.failed
        changed.append(set(raw.take(pa.array(np.flatnonzero(differs))).to_pylist()) if differs.any() else set())
    axis_keys = [normalised.filter(accepted) for _, normalised in keys]
    values, times = values[passed], None if times is None else times[passed]
    if values_of:
        rows_of, axis_keys = explode(axis_keys, {axis: lists.filter(accepted) for axis, lists in values_of.items()})
        values, times = values[rows_of], None if times is None else times[rows_of]
    return ValidatedBatch(
        keys=axis_keys,
        values=values,
        times=times,
        quarantined=_quarantine_frame(batch, problems, relation_columns(relation)),
        changed=changed,
        accepted=int(passed.sum()),
    )


def split_values(fields: pa.Array, separator: str, options: KeyNormalisation) -> pa.ListArray:
    """Each multi-valued key field as the list of its values: split at `separator`, each value stripped when
    the modality strips its keys, empty values left out (nulls give empty lists)."""
    lists = pc.split_pattern(fields.fill_null(""), separator)
    flat = lists.flatten()
    if options.strip:
        flat = pc.utf8_trim_whitespace(flat)
    kept = pc.greater(pc.binary_length(flat), 0)
    rows = pc.list_parent_indices(lists).filter(kept).to_numpy(zero_copy_only=False)
    offsets = np.searchsorted(rows, np.arange(len(fields) + 1))
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), flat.filter(kept))


def explode(keys: list[pa.Array], lists: dict[int, pa.ListArray]) -> tuple[np.ndarray, list[pa.Array]]:
    """The tuples of rows whose axes in `lists` hold several values (every combination, in row order): the
    row of each tuple and each axis's key per tuple; `keys` holds one key per row for the other axes."""
    rows = np.arange(len(keys[0]))
    picks: dict[int, np.ndarray] = {}
    for axis, values in lists.items():
        offsets = values.offsets.to_numpy()
        counts = np.diff(offsets)[rows]
        starts = np.cumsum(counts) - counts
        within = np.arange(int(counts.sum())) - np.repeat(starts, counts)
        picks = {earlier: np.repeat(pick, counts) for earlier, pick in picks.items()}
        rows = np.repeat(rows, counts)
        picks[axis] = offsets[rows] + within
    flats = {axis: values.flatten() for axis, values in lists.items()}
    exploded = [
        flats[axis].take(pa.array(picks[axis])) if axis in lists else array.take(pa.array(rows))
        for axis, array in enumerate(keys)
    ]
    return rows, exploded


def _quarantine_frame(batch: Batch, problems: Problems, columns: list[str]) -> pd.DataFrame:
    """The failed rows of a batch in the quarantine layout; raw is the reader's raw record when it could not
    parse the row, else JSON of the needed columns."""
    positions = sorted(problems.found)
    if not positions:
        return empty_quarantine()
    taken = batch.rows.take(pa.array(positions, pa.int64())).to_pylist()
    raws = [
        row[RAW_RECORD] if row[RAW_RECORD] is not None else json.dumps({c: row[c] for c in columns}, ensure_ascii=False)
        for row in taken
    ]
    return pd.DataFrame(
        {
            SOURCE_FILE: [batch.path] * len(positions),
            ROW_NUMBER: np.array([row[ROW_NUMBER] for row in taken], dtype=np.int64),
            FIELD: [problems.found[p][0] for p in positions],
            REASON: [problems.found[p][1] for p in positions],
            RAW: raws,
        }
    )


def empty_quarantine() -> pd.DataFrame:
    """No quarantined rows, in the quarantine layout."""
    return QUARANTINE_SCHEMA.empty_table().to_pandas()


# --- side data in pandas ----------------------------------------------------------------------------------------


class RowChecks:
    """The first failed check of each row of a pandas frame read by `read_source`: its field and reason.

    Call checks in priority order; a row that already failed is not checked again, so each quarantined row
    names exactly one problem. Keys and numbers follow the same rules as relation batches.
    """

    def __init__(self, rows: pd.DataFrame) -> None:
        self.rows = rows
        self.field = pd.Series(np.nan, index=rows.index, dtype="str")
        self.reason = pd.Series(np.nan, index=rows.index, dtype="str")
        self.fail(rows[READ_ERROR].notna(), ROW_FIELD, rows[READ_ERROR])

    @property
    def passed(self) -> pd.Series:
        """Boolean mask of the rows that passed every check so far."""
        return self.reason.isna()

    def fail(self, mask: pd.Series, field: str, reason: str | pd.Series) -> None:
        """Mark rows in `mask` (not failed before) as failed at `field` for `reason` (one text, or one per row)."""
        new = mask & self.passed
        if new.any():
            self.field[new] = field
            self.reason[new] = reason[new] if isinstance(reason, pd.Series) else reason

    def key(self, column: str, options: KeyNormalisation = KeyNormalisation()) -> pd.Series:
        """Check a key column: present, not too long, not blank once normalised; return the normalised keys."""
        raw = pa.array(self.rows[column], pa.string(), from_pandas=True)
        normalised = normalise_keys(raw, options)
        for mask, reason in key_problems(raw, normalised):
            self.fail(pd.Series(mask, index=self.rows.index), column, reason)
        return pd.Series(normalised.to_pandas().to_numpy(), index=self.rows.index, dtype="str")

    def number(self, column: str) -> pd.Series:
        """Check and parse a numeric column into float64 (NaN where the row failed)."""
        text = pa.array(self.rows[column], pa.string(), from_pandas=True)
        values, codes = parse_numbers(text)
        for mask, reason in number_problems(codes, text):
            if mask.any() and callable(reason):
                texts = reason(np.flatnonzero(mask).tolist())
                reason = pd.Series(texts, index=self.rows.index[mask], dtype="str").reindex(self.rows.index)
            self.fail(pd.Series(mask, index=self.rows.index), column, reason)
        return pd.Series(values, index=self.rows.index).where(self.passed)

    def raw(self, columns: list[str]) -> pd.Series:
        """Each failed row as read: the reader's raw record when it could not parse it, else JSON of the
        needed `columns`. Only failed rows are in the index."""
        rows = self.rows.loc[~self.passed]
        fields = rows[columns].astype(object).where(rows[columns].notna(), None)
        as_json = [json.dumps(record, ensure_ascii=False) for record in fields.to_dict("records")]
        return rows[RAW_RECORD].fillna(pd.Series(as_json, index=rows.index, dtype="str"))

    def quarantine(self, columns: list[str]) -> pd.DataFrame:
        """The failed rows in the quarantine layout (source_file, row_number, field, reason, raw)."""
        failed = ~self.passed
        return pd.DataFrame(
            {
                SOURCE_FILE: self.rows.loc[failed, SOURCE_FILE],
                ROW_NUMBER: self.rows.loc[failed, ROW_NUMBER],
                FIELD: self.field[failed],
                REASON: self.reason[failed],
                RAW: self.raw(columns),
            }
        )


# --- relation columns and quarantine files ----------------------------------------------------------------------


def relation_columns(relation: RelationSpec) -> list[str]:
    """The columns a relation reads from its sources: keys, the value column and the time when it is used."""
    columns = [*relation.key_columns]
    if relation.value_column is not None:
        columns.append(relation.value_column)
    if uses_time(relation):
        columns.append(relation.time)
    return columns


def uses_time(relation: RelationSpec) -> bool:
    """Whether de-duplication orders rows by the time column (first/last with a time column given)."""
    return relation.time is not None and relation.duplicates in ("first", "last")


class QuarantineWriter:
    """Quarantined rows appended batch by batch to one Parquet file (written even when empty, so the count is
    always visible); keeps the first row for error messages and counts the rows."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(self.path, QUARANTINE_SCHEMA)
        self.rows = 0
        self.first: dict[str, Any] | None = None

    def write(self, quarantined: pd.DataFrame) -> None:
        if quarantined.empty:
            return
        if self.first is None:
            self.first = quarantined.iloc[0].to_dict()
        self.rows += len(quarantined)
        self._writer.write_table(_quarantine_table(quarantined))

    def close(self) -> Path:
        self._writer.close()
        return self.path


def write_quarantine(quarantined: pd.DataFrame, path: Path) -> Path:
    """Write quarantined rows (possibly none, so the count is always visible) as Parquet."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(_quarantine_table(quarantined), path)
    return path


def _quarantine_table(quarantined: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(
        quarantined[list(QUARANTINE_SCHEMA.names)], schema=QUARANTINE_SCHEMA, preserve_index=False
    )
