import json

import numpy as np
import pandas as pd
import pytest

import pyarrow as pa
import pyarrow.parquet as pq

from hyperlearn.pipeline.readers import (
    SourceError,
    batch_frame,
    file_pieces,
    read_batches,
    read_file,
    read_piece,
    read_source,
    renumbered,
    source_files,
)
from hyperlearn.pipeline.spec import SourceSpec


def _rows(source: SourceSpec, columns: list[str], **options) -> pd.DataFrame:
    """Every batch of `source`, concatenated, as read_source's frame."""
    frames = [batch_frame(batch) for batch in read_batches(source, columns, **options)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*columns, "source_file"])


def test_csv_in_many_partitions_keeps_keys_exact_and_numbers_rows(write):
    body = "".join(f"{i:03d},item{i % 7},{i % 5}.5\n" for i in range(200))
    path = write("ratings.csv", "user,item,rating\n" + body)

    batches = list(read_batches(SourceSpec(path, "csv"), ["item", "user"], blocksize=256))
    rows = _rows(SourceSpec(path, "csv"), ["item", "user"], blocksize=256)

    assert len(batches) > 5
    assert list(rows.columns) == ["item", "user", "source_file", "row_number", "read_error", "raw_record"]
    assert rows["user"].tolist() == [f"{i:03d}" for i in range(200)]  # "007" stays "007"
    np.testing.assert_array_equal(rows["row_number"], np.arange(1, 201))
    assert (rows["source_file"] == str(path)).all()
    assert rows["read_error"].isna().all() and rows["raw_record"].isna().all()


def test_rows_with_the_wrong_number_of_fields_are_kept_with_their_reason(write):
    path = write("ratings.csv", 'user,item,rating\nu1,i1,4\nu2,i2\n\nu3,i3,5,extra\n"u,4",i4,3\n')

    rows = _rows(SourceSpec(path, "csv"), ["user", "rating"], blocksize=16)

    assert rows["row_number"].tolist() == [1, 2, 3, 4, 5]
    assert rows["read_error"].tolist()[1:4] == ["expected 3 fields, got 2", "empty line", "expected 3 fields, got 4"]
    assert json.loads(rows["raw_record"][3]) == ["u3", "i3", "5", "extra"]
    assert rows["user"].tolist()[::4] == ["u1", "u,4"]  # a quoted separator is part of the field
    assert rows.loc[1:3, "user"].isna().all()


def test_tsv_without_header_uses_names(write):
    path = write("u1.base", "1\t10\t5\t881250949\n2\t20\t3\t891717742\n")
    source = SourceSpec(path, "tsv", header=False, names=("user", "item", "rating", "time"))

    rows = _rows(source, ["user", "rating"])

    assert rows[["user", "rating"]].values.tolist() == [["1", "5"], ["2", "3"]]
    assert rows["row_number"].tolist() == [1, 2]


def test_names_replace_a_header_row(write):
    path = write("ratings.csv", "a;b\nx;1\n")
    rows = _rows(SourceSpec(path, "csv", sep=";", names=("user", "value")), ["user", "value"])
    assert rows[["user", "value", "row_number"]].values.tolist() == [["x", "1", 1]]


def test_missing_column_names_the_file_and_column(write):
    path = write("ratings.csv", "user,item\nu1,i1\n")
    message = r"ratings\.csv: column 'rating' not found; the columns are \['user', 'item'\]"
    with pytest.raises(SourceError, match=message):
        list(read_batches(SourceSpec(path, "csv"), ["user", "rating"]))


def test_header_errors(write):
    with pytest.raises(SourceError, match=r"empty\.csv: empty first row, expected a header"):
        list(read_batches(SourceSpec(write("empty.csv", ""), "csv"), ["user"]))
    with pytest.raises(SourceError, match=r"twice\.csv: column 'user' appears 2 times in the header"):
        list(read_batches(SourceSpec(write("twice.csv", "user,user\n1,2\n"), "csv"), ["user"]))
    with pytest.raises(SourceError, match=r"column name 'row_number' is reserved"):
        list(read_batches(SourceSpec(write("reserved.csv", "row_number\n1\n"), "csv"), ["row_number"]))


def test_empty_file_without_header_has_no_rows(write):
    source = SourceSpec(write("empty.csv", ""), "csv", header=False, names=("user", "item"))
    rows = _rows(source, ["user"])
    assert rows.empty and list(rows.columns)[:2] == ["user", "source_file"]


def test_bytes_not_valid_in_the_encoding_are_a_row_error(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_bytes("user,item\nu1,caf\u00e9\n".encode() + b"u2,caf\xe9\n")

    rows = _rows(SourceSpec(path, "csv"), ["user", "item"])

    assert rows["item"][0] == "caf\u00e9"
    assert rows["read_error"].tolist()[1] == "bytes not valid in encoding utf-8"
    assert json.loads(rows["raw_record"][1]) == ["u2", "caf\udce9"]
    latin = _rows(SourceSpec(path, "csv", encoding="latin-1"), ["item"])
    assert latin["item"][1] == "caf\u00e9" and latin["read_error"].isna().all()


def test_jsonl_values_keep_their_json_text(write):
    lines = [
        '{"user": "007", "item": 12, "rating": 4.0, "liked": true}',
        '{"user": "u2", "rating": null}',
        "[1, 2]",
        '{"user": "u3", oops}',
        "",
        '{"user": "u4", "item": "i4", "rating": 1e3}',
    ]
    path = write("events.jsonl", "\n".join(lines) + "\n")

    batches = list(read_batches(SourceSpec(path, "jsonl"), ["user", "item", "rating", "liked"], blocksize=40))
    rows = _rows(SourceSpec(path, "jsonl"), ["user", "item", "rating", "liked"], blocksize=40)

    assert len(batches) > 1
    np.testing.assert_array_equal(rows["row_number"], np.arange(1, 7))
    assert rows.loc[0, ["user", "item", "rating", "liked"]].tolist() == ["007", "12", "4.0", "true"]
    assert rows.loc[1, "user"] == "u2" and pd.isna(rows.loc[1, "item"]) and pd.isna(rows.loc[1, "rating"])
    assert rows["read_error"][2] == "expected a JSON object, got list"
    assert rows["read_error"][3].startswith("invalid JSON: Expecting property name")
    assert json.loads(rows["raw_record"][3]) == '{"user": "u3", oops}'
    assert rows["read_error"][4] == "empty line"
    assert rows.loc[5, "rating"] == "1000.0"


def test_parquet_columns_become_text(tmp_path):
    path = tmp_path / "ratings.parquet"
    pd.DataFrame({"user": [7, 8, 9], "item": ["a", None, "c"], "rating": [4.5, np.nan, 1.0]}).to_parquet(path)

    rows = _rows(SourceSpec(path, "parquet"), ["user", "item", "rating"])

    assert rows["user"].tolist() == ["7", "8", "9"]
    assert rows["rating"][0] == "4.5" and pd.isna(rows["rating"][1]) and pd.isna(rows["item"][1])
    assert rows["row_number"].tolist() == [1, 2, 3]
    with pytest.raises(SourceError, match=r"ratings\.parquet: column 'time' not found"):
        read_source(SourceSpec(path, "parquet"), ["user", "time"])


@pytest.mark.parametrize("header", [True, False])
def test_byte_order_mark_is_not_data(tmp_path, header):
    path = tmp_path / "ratings.csv"
    path.write_bytes("\ufeff".encode() + (b"user,item\n" if header else b"") + b"u1,i1\n")
    source = SourceSpec(path, "csv", header=header, names=None if header else ("user", "item"))
    rows = _rows(source, ["user"])
    assert rows["user"].tolist() == ["u1"]


def test_a_stray_quote_spoils_its_own_line_only(write):
    body = 'u1,i1,4\nu2,"i2,3\nu3,i3,5\nu4,i"4,2\n"u5",i5,1\n'
    path = write("ratings.csv", "user,item,rating\n" + body + "".join(f"v{i},j{i},1\n" for i in range(1000)))

    rows = _rows(SourceSpec(path, "csv"), ["user", "item"], blocksize=64)

    assert len(rows) == 1005 and rows["row_number"].tolist() == list(range(1, 1006))
    assert rows["read_error"][1] == "malformed quoting: unexpected end of data"
    assert json.loads(rows["raw_record"][1]) == 'u2,"i2,3'
    assert rows["read_error"].drop(index=1).isna().all()
    assert rows.loc[[0, 2, 3, 4], "item"].tolist() == ["i1", "i3", 'i"4', "i5"]  # a quote inside a field is data
    assert rows.loc[4, "user"] == "u5" and rows["user"].iloc[-1] == "v999"


def test_a_huge_field_is_read_as_one_value(write):
    path = write("ratings.csv", "user,item\n" + "k" * 300_000 + ",i1\nu2,i2\n")
    rows = _rows(SourceSpec(path, "csv"), ["user", "item"])
    assert rows["user"].str.len().tolist() == [300_000, 2] and rows["read_error"].isna().all()


def test_carriage_returns_end_lines_or_are_reported(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_bytes(b"user,item\r\nu1,i1\r\nu2\ri2,x\r\n\r\nu3,i3")
    rows = _rows(SourceSpec(path, "csv"), ["user", "item"])
    assert rows["row_number"].tolist() == [1, 2, 3, 4]
    assert rows["read_error"].tolist()[1:3] == ["carriage return inside the line", "empty line"]
    assert rows.loc[[0, 3], "item"].tolist() == ["i1", "i3"]


def test_parquet_integer_keys_keep_their_text_and_nulls_stay_missing(tmp_path):
    path = tmp_path / "ratings.parquet"
    pq.write_table(pa.table({"user": pa.array([1, None, 30], pa.int64()), "rating": [4.0, 2.5, 1.0]}), path)
    rows = _rows(SourceSpec(path, "parquet"), ["user", "rating"])
    assert rows["user"].tolist()[::2] == ["1", "30"] and pd.isna(rows["user"][1])


def test_unreadable_sources_are_named_with_what_they_are(write, tmp_path):
    with pytest.raises(SourceError, match=r"fake\.parquet: not a Parquet file"):
        list(read_batches(SourceSpec(write("fake.parquet", "user,item\nu1,i1\n"), "parquet"), ["user"]))
    with pytest.raises(SourceError, match=r"header\.csv: has a header row but no data rows"):
        list(read_batches(SourceSpec(write("header.csv", "user,item\n"), "csv"), ["user"]))
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(SourceError, match=r"folder\.csv: is a directory holding no csv file"):
        list(read_batches(SourceSpec(tmp_path / "folder.csv", "csv"), ["user"]))
    with pytest.raises(SourceError, match=r"nothing-\*\.csv: the pattern matches no file"):
        list(read_batches(SourceSpec(tmp_path / "nothing-*.csv", "csv"), ["user"]))


def test_folders_and_globs_read_their_files_in_order(write, tmp_path):
    write("logs/b.csv", "user\nu3\n")
    write("logs/a.csv", "user\nu1\nu2\n")
    write("logs/notes.txt", "not data\n")
    for path in (tmp_path / "logs", tmp_path / "logs" / "*.csv"):
        source = SourceSpec(path, "csv")
        assert [p.name for p in source_files(source)] == ["a.csv", "b.csv"]
        rows = _rows(source, ["user"])
        assert rows[["user", "row_number"]].values.tolist() == [["u1", 1], ["u2", 2], ["u3", 1]]
        assert rows["source_file"].str.endswith(("a.csv", "a.csv", "b.csv")).all()


def test_read_source_reads_every_file_of_a_folder_in_order_numbering_rows_per_file(write, tmp_path):
    write("logs/a.csv", "user\nu1\nu2\n")
    write("logs/b.csv", "user\nu3\n")
    frame = read_source(SourceSpec(tmp_path / "logs", "csv"), ["user"])
    assert frame["user"].tolist() == ["u1", "u2", "u3"]
    assert frame["row_number"].tolist() == [1, 2, 1]
    assert frame["source_file"].str.endswith(("a.csv", "a.csv", "b.csv")).all()
    assert frame.index.tolist() == [0, 1, 2]


def test_jsonl_rows_read_the_same_whether_arrow_or_json_parses_the_block(write):
    """A clean block goes through Arrow's JSON reader, a block with one bad line through `json` line by line:
    the good lines' values are the same text either way."""
    lines = [
        '{"user": "007", "item": 12, "rating": 4.0, "liked": true, "extra": {"a": 1}}',
        '{"user": "u2", "item": -3, "rating": 1e3}',
        '{"user": "caf\\u00e9", "rating": 0.1, "liked": false}',
        '{"item": 9007199254740993, "rating": 2.5e-07}',
    ]
    columns = ["user", "item", "rating", "liked"]
    clean = _rows(SourceSpec(write("clean.jsonl", "\n".join(lines) + "\n"), "jsonl"), columns)
    spoiled = _rows(SourceSpec(write("spoiled.jsonl", "\n".join([*lines, "{oops"]) + "\n"), "jsonl"), columns)

    assert clean["read_error"].isna().all() and spoiled["read_error"].notna().tolist() == [False] * 4 + [True]
    pd.testing.assert_frame_equal(clean[columns], spoiled[columns].iloc[:4])
    assert clean.loc[1, ["item", "rating"]].tolist() == ["-3", "1000.0"]
    assert clean.loc[3, ["item", "rating"]].tolist() == ["9007199254740993", "2.5e-07"]


@pytest.mark.parametrize(
    ("name", "text", "format_", "encoding"),
    [
        ("lines.csv", "\ufeffuser,item\n" + "".join(f'u{i},"i{i}\n' if i % 9 == 0 else f"u{i},i{i}\r\n"
                                                    for i in range(300)), "csv", "utf-8"),
        ("lines.jsonl", "".join(f'{{"user": "u{i}", "item": {i}}}\n' if i % 13 else "{broken\n" for i in range(300)),
         "jsonl", "utf-8"),
        ("wide.csv", "user,item\n" + "".join(f"u{i},i{i}\n" for i in range(300)), "csv", "utf-16"),
    ],
)
def test_pieces_read_on_their_own_give_the_files_batches(write, tmp_path, name, text, format_, encoding):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    source = SourceSpec(path, format_, encoding=encoding)
    pieces = file_pieces(source, path, ["user", "item"], 256)
    assert len(pieces) == (1 if encoding == "utf-16" else len(list(read_file(source, path, ["user", "item"], 256))))
    before, batches = 0, []
    for piece in pieces:
        for batch in read_piece(source, piece, ["user", "item"], 256):
            assert batch.rows.column("row_number")[0].as_py() == 1
            batches.append(renumbered(batch, before))
            before += len(batch)
    expected = list(read_file(source, path, ["user", "item"], 256))
    assert [b.rows for b in batches] == [b.rows for b in expected]
    assert before == 300 and pieces[-1].end in (None, path.stat().st_size)


def test_parquet_pieces_are_runs_of_whole_row_groups_up_to_a_batchs_rows(tmp_path):
    path = tmp_path / "ratings.parquet"
    users = pa.array([None if i % 37 == 0 else i for i in range(300)], pa.int64())
    pq.write_table(pa.table({"user": users, "item": [f"i{i % 11}" for i in range(300)]}), path, row_group_size=30)
    source = SourceSpec(path, "parquet")
    blocksize = 64 * 70  # a read batch: 70 rows, so a run closes at its third group of 30

    pieces = file_pieces(source, path, ["user", "item"], blocksize)

    assert [(piece.start, piece.end) for piece in pieces] == [(0, 3), (3, 6), (6, 9), (9, 10)]
    before, batches = 0, []
    for piece in pieces:
        own = list(read_piece(source, piece, ["user", "item"], blocksize))
        assert own[0].rows.column("row_number")[0].as_py() == 1, "numbered within the piece"
        batches += [renumbered(batch, before) for batch in own]
        before += sum(map(len, own))
    expected = list(read_file(source, path, ["user", "item"], blocksize))
    assert [len(b) for b in expected] == [70, 20] * 3 + [30], "no batch spans two pieces"
    assert [b.rows for b in batches] == [b.rows for b in expected]
    rows = pd.concat([batch_frame(b) for b in expected], ignore_index=True)
    assert rows["row_number"].tolist() == list(range(1, 301))
    assert rows["user"].isna().tolist() == [i % 37 == 0 for i in range(300)]


def test_a_parquet_row_group_bigger_than_a_block_is_a_piece_of_its_own(tmp_path):
    path = tmp_path / "wide.parquet"
    rng = np.random.default_rng(0)
    keys = ["".join(rng.choice(list("abcdefgh"), 500)) for _ in range(40)]  # 10 rows of 5 kB per group
    pq.write_table(pa.table({"user": keys, "unread": keys}), path, row_group_size=10)

    pieces = file_pieces(SourceSpec(path, "parquet"), path, ["user"], 64 * 70)

    assert [(piece.start, piece.end) for piece in pieces] == [(0, 1), (1, 2), (2, 3), (3, 4)]


def test_a_header_only_file_has_no_piece_and_says_so(write):
    path = write("header.csv", "user,item\n")
    with pytest.raises(SourceError, match=r"header\.csv: has a header row but no data rows"):
        file_pieces(SourceSpec(path, "csv"), path, ["user"], 256)
