import json
import shutil

import pandas as pd
import pytest

from hyperlearn.pipeline.catalog import EntityCatalog
from hyperlearn.pipeline.ingest import IngestError, ingest
from hyperlearn.pipeline.spec import load_spec
from hyperlearn.rundir import RunDir


def _check_accounting(report) -> None:
    for relation in report.relations:
        assert relation.rows_read == relation.rows_accepted + relation.rows_quarantined
        assert relation.entries_total == relation.rows_accepted - relation.duplicates_merged


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
