import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hyperlearn.pipeline.deduplication import PartitionedRows, merge_duplicates
from hyperlearn.pipeline.readers import read_batches
from hyperlearn.pipeline.spec import KeyNormalisation, RelationSpec, SourceSpec
from hyperlearn.pipeline.validation import (
    QUARANTINE_SCHEMA,
    QuarantineWriter,
    explode,
    normalise_keys,
    relation_columns,
    split_values,
    validate_batch,
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


def _validate_relation(relation: RelationSpec, options=(KeyNormalisation(), KeyNormalisation())):
    """(accepted rows: key_0, key_1, value, time; quarantined rows) of a relation's source."""
    accepted, quarantined = [], []
    for batch in read_batches(relation.sources["all"], relation_columns(relation)):
        validated = validate_batch(batch, relation, list(options))
        frame = pd.DataFrame({f"key_{axis}": keys.to_pylist() for axis, keys in enumerate(validated.keys)})
        frame["value"] = validated.values
        frame["time"] = validated.times if validated.times is not None else np.nan
        accepted.append(frame)
        quarantined.append(validated.quarantined)
    return pd.concat(accepted, ignore_index=True), pd.concat(quarantined, ignore_index=True)


def _validate(write, text: str, **changes) -> tuple[pd.DataFrame, pd.DataFrame]:
    source = SourceSpec(write("ratings.csv", text), "csv")
    return _validate_relation(_relation(source, **changes))


REASONS = [
    ("u1,i1\n", {}, "(row)", "expected 3 fields, got 2"),
    ("\n", {}, "(row)", "empty line"),
    (",i1,4\n", {}, "user", "empty key"),
    ('"  ",i1,4\n', {}, "user", "empty key"),
    ("u1,,4\n", {}, "item", "empty key"),
    ("u1,i1,\n", {}, "rating", "missing value"),
    ("u1,i1,four\n", {}, "rating", "not a number: 'four'"),
    ("u1,i1,inf\n", {}, "rating", "not a finite number: 'inf'"),
    ("u1,i1,1e39\n", {}, "rating", "beyond the float32 range: '1e39'"),
    ("u1,i1,1e400\n", {}, "rating", "not a finite number: '1e400'"),
    ('u1,"i1,4\n', {}, "(row)", "malformed quoting: unexpected end of data"),
    ("u1," + "k" * 131_073 + ",4\n", {}, "item", "key longer than 131,072 characters"),
    ("u1,\x00 ,4\n", {}, "item", "empty key"),
    ("u1,i1,2\n", {"loss": "logistic"}, "rating", "a logistic relation needs values in [0, 1], got 2"),
]


@pytest.mark.parametrize(("line", "changes", "field", "reason"), REASONS, ids=[case[3][:40] for case in REASONS])
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


@pytest.mark.parametrize("partitions", [1, 3])
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
def test_merge_duplicates_by_rule(write, tmp_path, rule, time, expected, partitions):
    accepted, _ = _validate(write, DUPLICATES, duplicates=rule, time=time)
    codes = [pd.factorize(accepted[f"key_{axis}"])[0].astype(np.int64) for axis in range(2)]
    spilled = PartitionedRows(tmp_path / "spill", order=2, with_time=time is not None and rule in ("first", "last"), partitions=partitions)
    times = accepted["time"].to_numpy() if spilled.dtype.names.count("time") else None
    for start in range(len(accepted)):  # one row per batch: order must survive batching and partitioning
        spilled.append([c[start : start + 1] for c in codes], accepted["value"].to_numpy()[start : start + 1], None if times is None else times[start : start + 1])

    merged = [merge_duplicates(records, 2, rule, (2, 1)) for records in spilled.partitions()]

    values = {tuple(key): value for coords, vals in merged for key, value in zip(coords.T.tolist(), vals.tolist())}
    assert values == {(0, 0): expected, (1, 0): 5.0}


def test_quarantine_file_is_written_even_when_empty(write, tmp_path):
    _, quarantined = _validate(write, "user,item,rating\nu1,i1,4\n")
    path = write_quarantine(quarantined, tmp_path / "quarantine" / "rating.parquet")
    table = pq.read_table(path)
    assert table.num_rows == 0
    streamed = QuarantineWriter(tmp_path / "quarantine" / "streamed.parquet")
    streamed.write(quarantined)
    assert pq.read_table(streamed.close()).schema == table.schema and streamed.rows == 0
    assert table.schema.field("row_number").type == pa.int64()
    assert table.schema.names == ["source_file", "row_number", "field", "reason", "raw"]


def test_absent_or_null_key_is_missing(write):
    path = write("events.jsonl", '{"user": "u1", "item": "i1"}\n{"item": "i2"}\n{"user": "u3", "item": null}\n')
    relation = _relation(SourceSpec(path, "jsonl"), value=1.0)

    accepted, quarantined = _validate_relation(relation)

    assert accepted["key_0"].tolist() == ["u1"]
    assert quarantined[["row_number", "field", "reason"]].values.tolist() == [
        [2, "user", "missing key"],
        [3, "item", "missing key"],
    ]
    assert json.loads(quarantined["raw"][0]) == {"user": None, "item": "i2"}


@pytest.mark.parametrize(
    ("options", "keys", "expected"),
    [
        (KeyNormalisation(), [" u1", "u1\t", "u\x001", "e\u0301", "\u00e9", "U1", None], ["u1", "u1", "u1", "\u00e9", "\u00e9", "U1", None]),
        (KeyNormalisation(casefold=True), ["U1", "Stra\u00dfe", "strasse"], ["u1", "strasse", "strasse"]),
        (KeyNormalisation(strip=False, unicode=None), [" u1", "e\u0301"], [" u1", "e\u0301"]),
    ],
)
def test_keys_are_normalised_by_the_modality_options(options, keys, expected):
    assert normalise_keys(pa.array(keys, pa.string()), options).to_pylist() == expected


def test_keys_differing_only_in_form_are_one_key_and_counted(write):
    text = "user,item,rating\nu1,i1,1\n u1 ,i1,2\nU1,caf\u00e9,3\nu1,cafe\u0301,4\n"
    accepted, _ = _validate(write, text)
    assert accepted["key_0"].tolist() == ["u1", "u1", "U1", "u1"]
    assert accepted["key_1"].tolist() == ["i1", "i1", "caf\u00e9", "caf\u00e9"]
    source = SourceSpec(write("ratings.csv", text), "csv")
    relation = _relation(source)
    (batch,) = read_batches(source, relation_columns(relation))
    validated = validate_batch(batch, relation, [KeyNormalisation(casefold=True), KeyNormalisation()])
    assert validated.keys[0].to_pylist() == ["u1"] * 4
    assert validated.changed == [{" u1 ", "U1"}, {"cafe\u0301"}]


def test_two_multi_valued_axes_give_every_combination_in_row_order():
    options = KeyNormalisation()
    first = split_values(pa.array(["a|b", "c", "d| |e"]), "|", options)
    second = split_values(pa.array(["x", "y;z", "w"]), ";", options)
    rows, keys = explode([pa.array(["?"] * 3), pa.array(["?"] * 3), pa.array(["r0", "r1", "r2"])], {0: first, 1: second})

    assert rows.tolist() == [0, 0, 1, 1, 2, 2]
    assert [k.to_pylist() for k in keys] == [
        ["a", "b", "c", "c", "d", "e"],
        ["x", "x", "y", "z", "w", "w"],
        ["r0", "r0", "r1", "r1", "r2", "r2"],
    ]
