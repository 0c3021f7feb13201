"""Per-row validation: every row read is either accepted or quarantined with the field and reason of its first
problem, never dropped; then accepted rows of a relation are de-duplicated on their key tuple.

Quarantined rows are written to Parquet (source_file, row_number, field, reason, raw) so that
rows_read == rows_accepted + rows_quarantined can be checked and every rejected row found in its file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hyperlearn.pipeline.readers import RAW_RECORD, READ_ERROR, ROW_NUMBER, SOURCE_FILE
from hyperlearn.pipeline.spec import RelationSpec

ROW_FIELD = "(row)"  # the `field` of a problem with the row as a whole, e.g. a wrong number of fields
FIELD, REASON, RAW = "field", "reason", "raw"
VALUE, TIME = "value", "time"
QUARANTINE_SCHEMA = pa.schema(
    [
        (SOURCE_FILE, pa.string()),
        (ROW_NUMBER, pa.int64()),
        (FIELD, pa.string()),
        (REASON, pa.string()),
        (RAW, pa.string()),
    ]
)


def key_column(axis: int) -> str:
    """Name of the validated key column of a relation's `axis`-th modality (spec order)."""
    return f"key_{axis}"


class RowChecks:
    """The first failed check of each row of a frame read by `read_source`: its field and reason.

    Call checks in priority order; a row that already failed is not checked again, so each quarantined row
    names exactly one problem.
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

    def key(self, column: str) -> pd.Series:
        """Check a key column: present and not blank. Keys stay exact strings."""
        keys = self.rows[column]
        self.fail(keys.isna(), column, "missing key")
        self.fail(keys.str.strip() == "", column, "empty key")
        return keys

    def number(self, column: str) -> pd.Series:
        """Check and parse a numeric column into float64 (NaN where the row failed)."""
        text = self.rows[column]
        self.fail(text.isna() | (text.str.strip() == ""), column, "missing value")
        numbers = pd.to_numeric(text, errors="coerce").astype("float64")
        self.fail(numbers.isna(), column, "not a number: " + _quoted(text))
        self.fail(~np.isfinite(numbers), column, "not a finite number: " + _quoted(text))
        return numbers.where(self.passed)

    def time(self, column: str, needed_by: str) -> pd.Series:
        """Check and parse a time column into float64 seconds since 1970: numbers as they are, else ISO 8601."""
        text = self.rows[column]
        self.fail(text.isna() | (text.str.strip() == ""), column, f"missing time (needed by {needed_by})")
        seconds = pd.to_numeric(text, errors="coerce").astype("float64")
        dated = seconds.isna() & text.notna()
        if dated.any():
            stamps = pd.to_datetime(text[dated], errors="coerce", utc=True, format="ISO8601")
            seconds[dated] = (stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
        self.fail(~np.isfinite(seconds), column, "unparseable time: " + _quoted(text))
        return seconds.where(self.passed)

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


def _quoted(text: pd.Series) -> pd.Series:
    """Each value as a Python literal, to show blanks and odd characters in a reason."""
    return text.map(repr, na_action="ignore").astype("str")


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


def validate_relation_rows(rows: pd.DataFrame, relation: RelationSpec) -> pd.DataFrame:
    """Validate one partition of a relation source read by `read_source`.

    Returns one row per input row: key_0 … key_{K-1} (strings), value and time (float64; time NaN when unused),
    source_file, row_number, and field / reason / raw, which are NaN for accepted rows.
    """
    rows = rows.reset_index(drop=True)
    checks = RowChecks(rows)
    keys = {key_column(axis): checks.key(column) for axis, column in enumerate(relation.key_columns)}
    if relation.value_column is None:
        values = pd.Series(relation.value, index=rows.index, dtype="float64")
    else:
        values = checks.number(relation.value_column)
        if relation.loss == "logistic":
            outside = (values < 0) | (values > 1)
            message = "a logistic relation needs values in [0, 1], got " + rows[relation.value_column]
            checks.fail(outside, relation.value_column, message)
    if uses_time(relation):
        times = checks.time(relation.time, f"duplicates: {relation.duplicates}")
    else:
        times = pd.Series(np.nan, index=rows.index, dtype="float64")
    return pd.DataFrame(
        {
            **keys,
            VALUE: values.where(checks.passed),
            TIME: times.where(checks.passed),
            SOURCE_FILE: rows[SOURCE_FILE],
            ROW_NUMBER: rows[ROW_NUMBER],
            FIELD: checks.field,
            REASON: checks.reason,
            RAW: checks.raw(relation_columns(relation)).reindex(rows.index),
        }
    )


def split_validated(validated: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(accepted rows: keys, value, time, source_file, row_number; quarantined rows in the quarantine layout)."""
    failed = validated[REASON].notna()
    accepted = validated.loc[~failed].drop(columns=[FIELD, REASON, RAW])
    quarantined = validated.loc[failed, list(QUARANTINE_SCHEMA.names)]
    return accepted.reset_index(drop=True), quarantined.reset_index(drop=True)


def deduplicate(accepted: pd.DataFrame, relation: RelationSpec) -> tuple[pd.DataFrame, int]:
    """One entry per key tuple by the relation's rule, and how many rows were merged away.

    first / last: the earliest / latest row by time when the relation has one, else by position in the file
    (ties on time go by position). mean / sum / max: aggregate the values. Returns (key_0 … value, merged).
    """
    keys = [key_column(axis) for axis in range(relation.order)]
    if relation.duplicates in ("first", "last"):
        order = [TIME, SOURCE_FILE, ROW_NUMBER] if uses_time(relation) else [SOURCE_FILE, ROW_NUMBER]
        kept = accepted.sort_values(order, kind="stable").drop_duplicates(keys, keep=relation.duplicates)
    else:
        kept = accepted.groupby(keys, sort=False, as_index=False)[VALUE].agg(relation.duplicates)
    entries = kept[[*keys, VALUE]].reset_index(drop=True)
    return entries, len(accepted) - len(entries)


def write_quarantine(quarantined: pd.DataFrame, path: Path) -> Path:
    """Write quarantined rows (possibly none, so the count is always visible) as Parquet."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(
        quarantined[list(QUARANTINE_SCHEMA.names)], schema=QUARANTINE_SCHEMA, preserve_index=False
    )
    pq.write_table(table, path)
    return path
