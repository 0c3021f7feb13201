import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hyperlearn.pipeline.readers import read_source
from hyperlearn.pipeline.spec import RelationSpec, SourceSpec
from hyperlearn.pipeline.validation import (
    QUARANTINE_SCHEMA,
    deduplicate,
    relation_columns,
    split_validated,
    validate_relation_rows,
    write_quarantine,
)


def _relation(source: SourceSpec, **changes) -> RelationSpec:
    settings = dict(
        name="rating",
        modalities=("user", "item"),
        key_columns=("user", "item"),
        value="rating",
        loss="squared",
        weight=1.0,
        time=None,
        duplicates="last",
        sources={"all": source},
    )
    return RelationSpec(**(settings | changes))


def _validate(write, text: str, **changes) -> tuple[pd.DataFrame, pd.DataFrame]:
    source = SourceSpec(write("ratings.csv", text), "csv")
    relation = _relation(source, **changes)
    rows = read_source(source, relation_columns(relation)).compute()
    return split_validated(validate_relation_rows(rows, relation))


REASONS = [
    ("u1,i1\n", {}, "(row)", "expected 3 fields, got 2"),
    ("\n", {}, "(row)", "empty line"),
    (",i1,4\n", {}, "user", "empty key"),
    ('"  ",i1,4\n', {}, "user", "empty key"),
    ("u1,,4\n", {}, "item", "empty key"),
    ("u1,i1,\n", {}, "rating", "missing value"),
    ("u1,i1,four\n", {}, "rating", "not a number: 'four'"),
    ("u1,i1,inf\n", {}, "rating", "not a finite number: 'inf'"),
    ("u1,i1,2\n", {"loss": "logistic"}, "rating", "a logistic relation needs values in [0, 1], got 2"),
]


@pytest.mark.parametrize(("line", "changes", "field", "reason"), REASONS, ids=[case[3] for case in REASONS])
def test_each_bad_row_is_quarantined_with_field_and_reason(write, line, changes, field, reason):
    accepted, quarantined = _validate(write, "user,item,rating\nu0,i0,1\n" + line, **changes)

    assert accepted[["key_0", "key_1", "value"]].values.tolist() == [["u0", "i0", 1.0]]
    assert quarantined[["row_number", "field", "reason"]].values.tolist() == [[2, field, reason]]
    assert quarantined["source_file"].str.endswith("ratings.csv").all()
    assert list(quarantined.columns) == QUARANTINE_SCHEMA.names


@pytest.mark.parametrize(
    ("time", "reason"),
    [("", "missing time (needed by duplicates: last)"), ("yesterday", "unparseable time: 'yesterday'")],
)
def test_time_is_required_when_last_needs_it(write, time, reason):
    text = f"user,item,rating,ts\nu0,i0,1,5\nu1,i1,2,{time}\n"
    accepted, quarantined = _validate(write, text, time="ts")
    assert len(accepted) == 1
    assert quarantined[["row_number", "field", "reason"]].values.tolist() == [[2, "ts", reason]]
    assert json.loads(quarantined["raw"][0]) == {"user": "u1", "item": "i1", "rating": "2", "ts": time}

    accepted, quarantined = _validate(write, text, time="ts", duplicates="mean")  # time unused: not checked
    assert len(accepted) == 2 and quarantined.empty


def test_first_problem_of_a_row_is_reported(write):
    _, quarantined = _validate(write, "user,item,rating\n,,x\n")
    assert quarantined[["field", "reason"]].values.tolist() == [["user", "empty key"]]


def test_raw_of_a_row_that_did_not_parse_is_its_fields(write):
    _, quarantined = _validate(write, "user,item,rating\nu1,i1,3,extra\n")
    assert json.loads(quarantined["raw"][0]) == ["u1", "i1", "3", "extra"]


def test_constant_value_and_times(write):
    text = "user,item,ts\nu1,i1,100\nu2,i1,1970-01-01T00:02:00Z\nu3,i1,1970-01-01T01:00:00+01:00\n"
    accepted, quarantined = _validate(write, text, value=1.0, time="ts")
    assert quarantined.empty
    assert accepted["value"].tolist() == [1.0, 1.0, 1.0]
    assert accepted["time"].tolist() == [100.0, 120.0, 0.0]


DUPLICATES = "user,item,rating,ts\nu1,i1,1,30\nu1,i1,2,10\nu1,i1,6,20\nu2,i1,5,1\n"


@pytest.mark.parametrize(
    ("rule", "time", "expected"),
    [
        ("last", "ts", 1.0),  # latest time wins, not the last row
        ("first", "ts", 2.0),
        ("last", None, 6.0),  # without a time, position in the file decides
        ("first", None, 1.0),
        ("mean", None, 3.0),
        ("sum", None, 9.0),
        ("max", None, 6.0),
    ],
)
def test_deduplicate_by_rule(write, rule, time, expected):
    accepted, _ = _validate(write, DUPLICATES, duplicates=rule, time=time)
    relation = _relation(SourceSpec(write("x.csv", ""), "csv"), duplicates=rule, time=time)

    entries, merged = deduplicate(accepted, relation)

    assert merged == 2
    assert len(entries) == len(accepted) - merged
    values = dict(zip(zip(entries["key_0"], entries["key_1"]), entries["value"]))
    assert values == {("u1", "i1"): expected, ("u2", "i1"): 5.0}


def test_quarantine_file_is_written_even_when_empty(write, tmp_path):
    _, quarantined = _validate(write, "user,item,rating\nu1,i1,4\n")
    path = write_quarantine(quarantined, tmp_path / "quarantine" / "rating.parquet")
    table = pq.read_table(path)
    assert table.num_rows == 0
    assert table.schema.field("row_number").type == pa.int64()
    assert table.schema.names == ["source_file", "row_number", "field", "reason", "raw"]


def test_absent_or_null_key_is_missing(write):
    path = write("events.jsonl", '{"user": "u1", "item": "i1"}\n{"item": "i2"}\n{"user": "u3", "item": null}\n')
    relation = _relation(SourceSpec(path, "jsonl"), value=1.0)
    rows = read_source(relation.sources["all"], relation_columns(relation)).compute()

    accepted, quarantined = split_validated(validate_relation_rows(rows, relation))

    assert accepted["key_0"].tolist() == ["u1"]
    assert quarantined[["row_number", "field", "reason"]].values.tolist() == [
        [2, "user", "missing key"],
        [3, "item", "missing key"],
    ]
    assert json.loads(quarantined["raw"][0]) == {"user": None, "item": "i2"}
