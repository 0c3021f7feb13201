"""Ingest on a cluster's workers writes the run directory byte for byte as the driver alone does: same catalog,
tensors, quarantine files and accounting, on bad rows, multi-file globs, text files cut into several pieces, JSON
lines, and Parquet cut into runs of row groups; on a `LocalCluster` of processes and on the `dask scheduler` /
`dask worker` cluster that tests/flows/test_external_cluster.py starts (its workers cannot read a run
directory)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client, LocalCluster

from hyperlearn.pipeline import ingest as ingest_module
from hyperlearn.pipeline.cluster_reading import sources_unseen
from hyperlearn.pipeline.ingest import ingest
from hyperlearn.pipeline.readers import SourceError, file_pieces
from hyperlearn.pipeline.spec import SourceSpec, load_spec
from hyperlearn.rundir import RunDir
from hyperlearn.workers import cluster_workers
from tests.flows.test_external_cluster import external_cluster, external_scheduler_file  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow

MEMORY_LIMIT = 2**25  # the smallest blocks (1 MiB): the big file is cut into two pieces
BAD_LINES = {  # line index in the big file → a bad line
    5: 'u1,"i2,3,7',  # a stray quote
    20_000: "u3,i4,1e39,9",  # beyond float32
    41_000: "",  # an empty line
    60_001: ",i9,2,4",  # a missing key
    88_888: "u5,i5,2",  # a field short
}
CLICK_ROW_GROUP = 5_000  # 60,000 clicks in 12 row groups: pieces of 4 groups (16,384 rows make a read batch)
MISSING_CLICK_KEYS = {  # row index in the clicks → the key column left null there
    3: "user",  # row group 0
    7_000: "user",  # row group 1
    16_384: "item",  # the first row of piece 0's second batch
    19_999: "user",  # the last row of piece 0
    20_000: "user",  # the first row of piece 1
    45_123: "item",  # piece 2
    59_999: "user",  # the last row
}


@pytest.fixture(scope="module")
def process_cluster() -> Iterator[Client]:
    """Two single-threaded process workers."""
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                     scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture
def dataset(write, write_spec, tmp_path) -> Path:
    """A rating log over a glob of three CSV files (the first about 1.7 MB, so cut into two pieces, with bad
    lines in both pieces), JSON lines taggings with a multi-valued field and a broken line, Parquet friendships,
    and Parquet clicks in 12 row groups, so three pieces of two batches each, with null keys in several groups."""
    rng = np.random.default_rng(3)
    lines = [
        f"u{u},i{i},{r / 2},{t}"
        for u, i, r, t in zip(rng.integers(0, 3000, 100_000), rng.integers(0, 800, 100_000),
                              rng.integers(1, 11, 100_000), rng.integers(0, 50, 100_000))
    ]
    for index, line in BAD_LINES.items():
        lines[index] = line
    header = "user_id,item_id,rating,timestamp\n"
    big = write("ratings/part-0.csv", header + "\n".join(lines) + "\n")
    source = SourceSpec(big, "csv")
    assert len(file_pieces(source, big, ["user_id"], 2**20)) == 2
    write("ratings/part-1.csv", header + "u1,i1,4,100\nu2,i1,x,3\n U1 ,i1,5,200\n")
    write("ratings/part-2.csv", header + "u9,i9,1,1\r\nu9,i8,2,2\r\n")
    write("taggings.jsonl", '{"user": "u1", "item": "i1", "tags": "a|b"}\n{"user": "u2"\n'
          '{"user": "u2", "item": "i3", "tags": "b||c"}\n{"user": "u2", "item": "i3", "tags": "|"}\n')
    pd.DataFrame({"a": ["u1", "u2", None, "u3"], "b": [2, 3, 4, None]}).to_parquet(tmp_path / "friends.parquet")
    clicks = {"user": [f"u{u}" for u in rng.integers(0, 3000, 60_000)], "item": rng.integers(0, 800, 60_000).tolist()}
    for index, column in MISSING_CLICK_KEYS.items():
        clicks[column][index] = None
    clicks_path = tmp_path / "clicks.parquet"
    pq.write_table(pa.table(clicks, pa.schema([("user", pa.string()), ("item", pa.int64())])), clicks_path,
                   row_group_size=CLICK_ROW_GROUP)
    pieces = file_pieces(SourceSpec(clicks_path, "parquet"), clicks_path, ["user", "item"], 2**20)
    assert [(piece.start, piece.end) for piece in pieces] == [(0, 4), (4, 8), (8, 12)]
    return write_spec({
        "name": "cluster",
        "modalities": [{"name": "user"}, {"name": "item"}, {"name": "tag"}],
        "relations": [
            {"name": "rating", "modalities": {"user": "user_id", "item": "item_id"}, "value": "rating",
             "time": "timestamp", "duplicates": "last", "source": {"path": "ratings/part-*.csv"}},
            {"name": "rating_mean", "modalities": {"user": "user_id", "item": "item_id"}, "value": "rating",
             "duplicates": "mean", "source": {"path": "ratings", "format": "csv"}},
            {"name": "tagging", "modalities": {"user": "user", "item": "item", "tag": {"column": "tags",
             "separator": "|"}}, "loss": "bpr", "source": {"path": "taggings.jsonl"}},
            {"name": "friendship", "axes": [{"modality": "user", "column": "a"}, {"modality": "item", "column": "b"}],
             "loss": "bpr", "source": {"path": "friends.parquet"}},
            {"name": "click", "modalities": {"user": "user", "item": "item"}, "loss": "bpr",
             "source": {"path": "clicks.parquet"}},
        ],
        "split": {"test": 0.2, "validation": 0.1, "seed": 1},
        "training": {"rank": 4},
    })


def assert_same_files(expected: Path, found: Path) -> list[str]:
    """Assert that the files under `found` are those under `expected`, byte for byte; their relative paths."""
    files = {root: {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*"))
                    if path.is_file()} for root in (expected, found)}
    assert sorted(files[found]) == sorted(files[expected])
    for name, content in files[expected].items():
        assert files[found][name] == content, name
    return sorted(files[expected])


def _same_as_the_driver(spec_path: Path, tmp_path: Path, client: Client) -> None:
    spec = load_spec(spec_path)
    driver = ingest(spec, RunDir(tmp_path / "driver"), tmp_path / "catalog", memory_limit=MEMORY_LIMIT)
    on_cluster = ingest(spec, RunDir(tmp_path / "cluster"), tmp_path / "catalog", memory_limit=MEMORY_LIMIT,
                        client=client)
    assert on_cluster.to_dict() == driver.to_dict()
    assert (driver.read_on, on_cluster.read_on) == (None, client.scheduler.address)
    files = assert_same_files(tmp_path / "driver", tmp_path / "cluster")
    assert {name for name in files if name.startswith("quarantine/")} == {
        f"quarantine/{name}.parquet" for name in ("rating", "rating_mean", "tagging", "friendship", "click")
    }
    quarantined = pd.read_parquet(tmp_path / "cluster" / "quarantine" / "rating.parquet")
    big = quarantined[quarantined["source_file"].str.endswith("part-0.csv")]
    assert big["row_number"].tolist() == [index + 1 for index in BAD_LINES], "true row numbers across pieces"
    clicks = pd.read_parquet(tmp_path / "cluster" / "quarantine" / "click.parquet")
    assert clicks["row_number"].tolist() == [index + 1 for index in MISSING_CLICK_KEYS]
    assert clicks["field"].tolist() == list(MISSING_CLICK_KEYS.values())
    assert not client.who_has(), "nothing left on the cluster"


def test_ingest_on_a_process_cluster_writes_what_the_driver_writes(dataset, tmp_path, process_cluster):
    _same_as_the_driver(dataset, tmp_path, process_cluster)


def test_ingest_on_the_dask_command_line_cluster_writes_what_the_driver_writes(
    dataset, tmp_path, external_cluster  # noqa: F811 - the imported fixture
):
    with Client(external_cluster) as client:
        _same_as_the_driver(dataset, tmp_path, client)


def test_a_bad_file_fails_with_the_drivers_error_and_leaves_nothing_on_the_cluster(
    write, write_spec, tmp_path, process_cluster
):
    write("ratings/a.csv", "user_id,item_id,rating\nu1,i1,3\n")
    write("ratings/b.csv", "user_id,item_id,rating\n")
    spec = load_spec(write_spec({
        "name": "bad", "modalities": [{"name": "user"}, {"name": "item"}],
        "relations": [{"name": "rating", "modalities": {"user": "user_id", "item": "item_id"}, "value": "rating",
                       "source": {"path": "ratings/*.csv"}}],
    }))
    with pytest.raises(SourceError, match=r"b\.csv: has a header row but no data rows"):
        ingest(spec, RunDir(tmp_path / "run"), tmp_path / "catalog", client=process_cluster)
    assert not process_cluster.who_has()


def test_workers_that_do_not_see_a_source_as_the_driver_are_named(tmp_path, process_cluster):
    present = tmp_path / "present.csv"
    present.write_text("user\nu1\n")
    problems = sources_unseen(process_cluster, {present: present.stat().st_size + 1, tmp_path / "absent.csv": 3})
    workers = sorted(cluster_workers(process_cluster))
    assert problems == [
        line
        for worker in workers
        for line in (f"worker {worker} sees {present} with 8 bytes, the driver with 9",
                     f"worker {worker} cannot read {tmp_path / 'absent.csv'}")
    ]
    assert sources_unseen(process_cluster, {present: present.stat().st_size}) == []


def test_a_cluster_whose_workers_do_not_see_the_sources_leaves_ingest_to_the_driver(
    dataset, tmp_path, process_cluster, monkeypatch, caplog
):
    # The workers of a cluster on other hosts, without the data: they cannot exist on this one machine.
    monkeypatch.setattr(ingest_module, "sources_unseen", lambda client, sizes: ["worker tcp://w1 cannot read a.csv"])
    spec = load_spec(dataset)
    driver = ingest(spec, RunDir(tmp_path / "driver"), tmp_path / "catalog", memory_limit=MEMORY_LIMIT)
    with caplog.at_level("WARNING"):
        fallback = ingest(spec, RunDir(tmp_path / "fallback"), tmp_path / "catalog", memory_limit=MEMORY_LIMIT,
                          client=process_cluster)
    assert fallback.to_dict() == driver.to_dict() and fallback.read_on is None
    assert any("ingest runs in this process: the cluster's workers do not see the sources as this process does: "
               "worker tcp://w1 cannot read a.csv" in message for message in caplog.messages)
