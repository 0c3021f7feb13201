import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hyperlearn.pipeline.catalog import EntityCatalog
from hyperlearn.pipeline.ingest import IngestError, ingest
from hyperlearn.pipeline.spec import load_spec
from hyperlearn.rundir import RunDir


def _check_accounting(report) -> None:
    for relation in report.relations:
        assert relation.rows_read == relation.rows_accepted + relation.rows_quarantined
        assert relation.entries_total == relation.tuples - relation.duplicates_merged


def test_ingest_writes_relations_quarantine_and_run_catalog(demo_document, write_spec, tmp_path):
    spec = load_spec(write_spec(demo_document))
    run, catalog_dir = RunDir(tmp_path / "run"), tmp_path / "catalog"

    report = ingest(spec, run, catalog_dir)

    _check_accounting(report)
    (rating,) = report.relations
    assert (rating.rows_read, rating.rows_accepted, rating.rows_quarantined, rating.duplicates_merged) == (10, 6, 4, 1)
    assert rating.entries_total == 5
    quarantine = pd.read_parquet(run.path / rating.quarantine_file)
    assert quarantine[["row_number", "field", "reason"]].values.tolist() == [
        [5, "rating", "not a number: 'abc'"],
        [6, "user_id", "empty key"],
        [7, "(row)", "expected 4 fields, got 3"],
        [9, "timestamp", "unparseable time: 'zzz'"],
    ]
    assert rating.quarantine_file == "quarantine/rating.parquet"

    assert {m.name: (m.entities, m.existing, m.new) for m in report.modalities} == {
        "user": (4, 0, 4),
        "item": (4, 0, 4),
    }
    assert EntityCatalog.load(run.catalog, "user").keys.tolist() == ["u1", "u2", "u5", "u6"]
    assert not catalog_dir.exists()  # the persistent catalog is only changed by publishing

    meta = run.read_relation_meta("rating")
    assert meta.modalities == ("user", "item") and meta.shape == (4, 4)
    tensors = {s: run.read_relation_split("rating", s) for s in rating.entries}
    assert {s: t.nnz for s, t in tensors.items()} == rating.entries
    merged = {tuple(c): v for t in tensors.values() for c, v in zip(t.coords.T.tolist(), t.values.tolist())}
    assert merged[1, 0] == 5.0  # (u2, i1): the later time wins over the later row

    assert json.loads(json.dumps(report.to_dict()))["relations"][0]["entries_total"] == 5


def test_second_run_keeps_ids_and_appends_new_entities(demo_document, write_spec, write, tmp_path):
    spec = load_spec(write_spec(demo_document))
    ingest(spec, RunDir(tmp_path / "run1"), tmp_path / "catalog")
    shutil.copytree(tmp_path / "run1" / "catalog", tmp_path / "catalog")  # what publishing does
    before = EntityCatalog.load(tmp_path / "catalog", "user").keys.tolist()

    write("ratings.csv", "user_id,item_id,rating,timestamp\nu0,i1,3,1\nu2,i9,4,2\nu1,i1,5,3\n")
    report = ingest(load_spec(write_spec(demo_document)), RunDir(tmp_path / "run2"), tmp_path / "catalog")

    after = EntityCatalog.load(tmp_path / "run2" / "catalog", "user").keys.tolist()
    assert after[: len(before)] == before and after[len(before) :] == ["u0"]
    assert {m.name: (m.entities, m.existing, m.new) for m in report.modalities} == {
        "user": (5, 4, 1),
        "item": (5, 4, 1),
    }
    assert RunDir(tmp_path / "run2").read_relation_meta("rating").shape == (5, 5)


def test_order_three_relation_from_given_splits_beside_an_order_two_one(demo_document, write_spec, write, tmp_path):
    write("tags.base.jsonl", "".join(f'{{"u": "u{i % 3}", "m": "i{i % 4}", "t": "t{i}"}}\n' for i in range(12)))
    write("tags.test.jsonl", '{"u": "u1", "m": "i1", "t": "t0"}\n{"u": "u9", "m": "i1"}\n')
    demo_document["modalities"].append({"name": "tag"})
    demo_document["relations"].append(
        {
            "name": "tagging",
            "modalities": {"user": "u", "item": "m", "tag": "t"},
            "loss": "logistic",
            "duplicates": "max",
            "sources": {"train": {"path": "tags.base.jsonl"}, "test": {"path": "tags.test.jsonl"}},
        }
    )
    spec = load_spec(write_spec(demo_document))

    report = ingest(spec, RunDir(tmp_path / "run"), tmp_path / "catalog")

    _check_accounting(report)
    tagging = report.relations[1]
    assert (tagging.rows_read, tagging.rows_accepted, tagging.rows_quarantined) == (14, 13, 1)
    assert tagging.entries["test"] == 1 and tagging.entries["train"] + tagging.entries["validation"] == 12
    sizes = {m.name: m.entities for m in report.modalities}
    assert sizes["user"] == 5  # u0, u1, u2 from tags, u1, u2, u5, u6 from ratings; u9's tag row is quarantined
    meta = RunDir(tmp_path / "run").read_relation_meta("tagging")
    assert meta.shape == (sizes["user"], sizes["item"], sizes["tag"]) and meta.order == 3
    assert RunDir(tmp_path / "run").read_relation_meta("rating").shape == (sizes["user"], sizes["item"])
    test = RunDir(tmp_path / "run").read_relation_split("tagging", "test")
    users = EntityCatalog.load(tmp_path / "run" / "catalog", "user").keys
    assert users[test.coords[0, 0]] == "u1" and test.values.tolist() == [1.0]


def test_relation_without_a_valid_row_fails_after_writing_its_quarantine(demo_document, write_spec, write, tmp_path):
    write("ratings.csv", "user_id,item_id,rating,timestamp\nu1,i1,x,1\n")
    message = r"relation 'rating': none of its 1 rows passed validation; first: .*ratings\.csv row 1, rating: not a"
    with pytest.raises(IngestError, match=message):
        ingest(load_spec(write_spec(demo_document)), RunDir(tmp_path / "run"), tmp_path / "catalog")
    assert len(pd.read_parquet(tmp_path / "run" / "quarantine" / "rating.parquet")) == 1


def test_same_result_on_a_distributed_client(demo_document, write_spec, tmp_path, dask_client):
    spec = load_spec(write_spec(demo_document))
    with dask_client.as_current():
        distributed = ingest(spec, RunDir(tmp_path / "distributed"), tmp_path / "catalog")
    local = ingest(spec, RunDir(tmp_path / "local"), tmp_path / "catalog")
    assert distributed.to_dict() == local.to_dict()


def _ingest_ratings(write, write_spec, tmp_path, demo_document, text: str, **relation_changes):
    """Ingest the demo spec with ratings.csv replaced by `text`; the report, its accounting checked."""
    write("ratings.csv", text)
    demo_document["relations"][0] |= relation_changes
    report = ingest(load_spec(write_spec(demo_document)), RunDir(tmp_path / "run"), tmp_path / "catalog")
    _check_accounting(report)
    return report


def _quarantined(tmp_path) -> list[list]:
    frame = pd.read_parquet(tmp_path / "run" / "quarantine" / "rating.parquet")
    return frame[["row_number", "field", "reason"]].values.tolist()


HEADER = "user_id,item_id,rating,timestamp\n"


def test_values_beyond_float32_and_huge_keys_are_quarantined(demo_document, write_spec, write, tmp_path):
    text = HEADER + "u1,i1,1e39,1\nu2,i2,3,2\n" + "u" * 131_073 + ",i3,4,3\nu3,i3,-3.4e38,4\n"
    report = _ingest_ratings(write, write_spec, tmp_path, demo_document, text)
    assert _quarantined(tmp_path) == [
        [1, "rating", "beyond the float32 range: '1e39'"],
        [3, "user_id", "key longer than 131,072 characters"],
    ]
    assert report.relations[0].rows_accepted == 2
    tensors = [RunDir(tmp_path / "run").read_relation_split("rating", s) for s in ("train", "validation", "test")]
    assert all(np.isfinite(t.values).all() for t in tensors)


def test_a_stray_quote_quarantines_its_line_and_the_rest_is_read(demo_document, write_spec, write, tmp_path):
    rows = "".join(f"u{i},i{i},3,{i}\n" for i in range(50))
    report = _ingest_ratings(write, write_spec, tmp_path, demo_document, HEADER + 'u0,"i0,3,1\n' + rows)
    assert _quarantined(tmp_path) == [[1, "(row)", "malformed quoting: unexpected end of data"]]
    assert report.relations[0].rows_accepted == 50


def test_keys_differing_only_in_form_are_one_entity_and_counted(demo_document, write_spec, write, tmp_path):
    text = HEADER + "u1,i1,1,1\n u1 ,i2,2,2\nu1\x00,i3,3,3\nu\u00e9,i1,4,4\nue\u0301,i2,5,5\n"
    report = _ingest_ratings(write, write_spec, tmp_path, demo_document, text)
    users = {m.name: m for m in report.modalities}["user"]
    assert users.entities == 2 and users.keys_normalised == 3  # " u1 ", "u1\x00", "ue\u0301"
    assert EntityCatalog.load(tmp_path / "run" / "catalog", "user").keys.tolist() == ["u1", "u\u00e9"]


def test_single_entity_and_fully_merged_relations_are_warned_about(demo_document, write_spec, write, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="hyperlearn.pipeline.ingest"):
        report = _ingest_ratings(write, write_spec, tmp_path, demo_document, HEADER + "u1,i1,1,1\nu1,i1,2,2\nu1,i1,3,3\n")
    assert report.warnings == (
        "relation 'rating': all 3 accepted tuples merged into one entry",
        "modality 'user' has a single entity: 'u1'",
        "modality 'item' has a single entity: 'i1'",
    )
    assert [record.getMessage() for record in caplog.records] == list(report.warnings)
    assert report.to_dict()["warnings"] == list(report.warnings)


def test_parquet_integer_keys_with_a_null(demo_document, write_spec, tmp_path):
    table = pa.table(
        {
            "user_id": pa.array([1, None, 3], pa.int64()),
            "item_id": pa.array([10, 20, 30], pa.int64()),
            "rating": [4.0, 2.0, 1.0],
            "timestamp": [1, 2, 3],
        }
    )
    pq.write_table(table, tmp_path / "ratings.parquet")
    demo_document["relations"][0]["source"] = {"path": "ratings.parquet"}
    report = ingest(load_spec(write_spec(demo_document)), RunDir(tmp_path / "run"), tmp_path / "catalog")
    _check_accounting(report)
    assert _quarantined(tmp_path) == [[2, "user_id", "missing key"]]
    assert EntityCatalog.load(tmp_path / "run" / "catalog", "user").keys.tolist() == ["1", "3"]


def test_a_glob_source_lists_its_files_and_numbers_rows_per_file(demo_document, write_spec, write, tmp_path):
    write("logs/ratings-1.csv", HEADER + "u1,i1,4,1\nu2,i2,x,2\n")
    write("logs/ratings-2.csv", HEADER + "u3,i1,4,1\n,i2,3,2\n")
    demo_document["relations"][0]["source"] = {"path": "logs/ratings-*.csv"}
    report = ingest(load_spec(write_spec(demo_document)), RunDir(tmp_path / "run"), tmp_path / "catalog")
    _check_accounting(report)
    (rating,) = report.relations
    assert [Path(f).name for f in rating.files["all"]] == ["ratings-1.csv", "ratings-2.csv"]
    quarantine = pd.read_parquet(tmp_path / "run" / rating.quarantine_file)
    assert [(Path(f).name, r) for f, r in zip(quarantine["source_file"], quarantine["row_number"])] == [
        ("ratings-1.csv", 2),
        ("ratings-2.csv", 2),
    ]


@pytest.mark.parametrize("memory_limit", [2**16, 2**30])  # 15 partitions, 1
def test_memory_limit_changes_partitions_not_results(demo_document, write_spec, write, tmp_path, memory_limit):
    rng = np.random.default_rng(0)
    rows = "".join(f"u{u},i{i},{v},{t}\n" for u, i, v, t in zip(rng.integers(0, 30, 3000), rng.integers(0, 20, 3000), rng.integers(1, 6, 3000), rng.integers(0, 50, 3000)))
    write("ratings.csv", HEADER + rows)
    spec = load_spec(write_spec(demo_document))
    small = ingest(spec, RunDir(tmp_path / "small"), tmp_path / "catalog", memory_limit=memory_limit)
    reference = ingest(spec, RunDir(tmp_path / "reference"), tmp_path / "catalog", memory_limit=2**32)
    assert small.to_dict() == reference.to_dict()
    for split in ("train", "validation", "test"):
        a = RunDir(tmp_path / "small").read_relation_split("rating", split)
        b = RunDir(tmp_path / "reference").read_relation_split("rating", split)
        np.testing.assert_array_equal(a.coords, b.coords)
        np.testing.assert_array_equal(a.values, b.values)


def test_a_modality_on_two_axes_with_given_validation_and_no_test(demo_document, write_spec, write, tmp_path):
    """Friendships (user × user) from train and validation files: one catalog for both axes, no test split, and
    the spec's structure, negatives and evaluation carried into the tensor's meta."""
    write("friends-train.csv", "a,b\nu1,u2\nu2,u3\nu3,u1\n")
    write("friends-validation.csv", "a,b\nu1,u9\n")
    demo_document["relations"].append({
        "name": "friendship",
        "axes": [{"modality": "user", "column": "a"}, {"modality": "user", "column": "b"}],
        "loss": "bpr",
        "evaluate": {"target": "b", "k": [1]},
        "sources": {"train": {"path": "friends-train.csv"}, "validation": {"path": "friends-validation.csv"}},
    })
    run = RunDir(tmp_path / "run")

    report = ingest(load_spec(write_spec(demo_document)), run, tmp_path / "catalog")

    _check_accounting(report)
    meta = run.read_relation_meta("friendship")
    users = EntityCatalog.load(run.catalog, "user").keys.tolist()
    assert meta.modalities == ("user", "user") and meta.axes == ("a", "b") and meta.shape == (len(users),) * 2
    assert meta.loss == "bpr" and meta.evaluation.target == 1 and meta.evaluation.k == (1,)
    splits = {split: run.read_relation_split("friendship", split) for split in ("train", "validation", "test")}
    assert (splits["train"].nnz, splits["validation"].nnz, splits["test"].nnz) == (3, 1, 0)
    (pair,) = splits["validation"].coords.T.tolist()
    assert [users[i] for i in pair] == ["u1", "u9"]


def test_a_multi_valued_field_gives_one_tuple_per_value_and_rows_without_one_are_quarantined(
    demo_document, write_spec, write, tmp_path
):
    write("movies.csv", 'movieId,title,genres\nm1,A,Adventure|Animation|Children\nm2,B,\nm3,C,|\nm4,D, Drama | Crime\n'
          "m5,E,Drama|Drama\n")
    demo_document["modalities"] += [{"name": "movie"}, {"name": "genre"}]
    demo_document["relations"].append({
        "name": "genres",
        "modalities": {"movie": "movieId", "genre": {"column": "genres", "separator": "|"}},
        "loss": "bpr",
        "split": {"test": 0.0, "validation": 0.0},
        "source": {"path": "movies.csv"},
    })
    run = RunDir(tmp_path / "run")

    report = ingest(load_spec(write_spec(demo_document)), run, tmp_path / "catalog")

    _check_accounting(report)
    genres = report.relations[1]
    assert (genres.rows_read, genres.rows_accepted, genres.rows_quarantined) == (5, 3, 2)
    assert (genres.tuples, genres.duplicates_merged, genres.entries_total) == (7, 1, 6)
    quarantine = pd.read_parquet(run.path / genres.quarantine_file)
    assert quarantine[["row_number", "field", "reason"]].values.tolist() == [
        [2, "genres", "empty key"],
        [3, "genres", "no value between the separators '|'"],
    ]
    movies = EntityCatalog.load(run.catalog, "movie").keys.tolist()
    names = EntityCatalog.load(run.catalog, "genre").keys.tolist()
    assert names == ["Adventure", "Animation", "Children", "Crime", "Drama"]
    train = run.read_relation_split("genres", "train")
    pairs = {(movies[m], names[g]) for m, g in train.coords.T.tolist()}
    assert pairs == {("m1", "Adventure"), ("m1", "Animation"), ("m1", "Children"), ("m4", "Drama"),
                     ("m4", "Crime"), ("m5", "Drama")}
