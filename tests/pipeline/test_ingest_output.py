"""The relation files ingest writes stay what they were before the streaming writer: every array of every
`<split>.npz` has the same dtype, shape and elements, whatever the memory limit (so however many partitions and
key ranges it used).

The arrays, not the files: the in-memory writer stored a split's coordinates in Fortran order or in C order
depending on how many sources and partitions fed the split (an accident of NumPy's boolean indexing); the
streaming writer always stores C order. np.load gives equal arrays either way."""

import hashlib

import numpy as np
import pytest

from hyperlearn.pipeline.ingest import ingest
from hyperlearn.pipeline.spec import load_spec
from hyperlearn.rundir import SPLITS, RunDir

#: SHA-256 of every array of every split file (name, dtype, shape, C-order bytes), as the in-memory writer of
#: commit 7390f50 (np.savez of whole arrays) wrote them for the dataset below.
GOLDEN = {
    "rating": "dfa83917e0612273c3f69f6b11affb5a5d824fe25b966dfaec6426ac5258f33f",
    "tagging": "a7228c1ab132e520c4c20e39200099db7f2f4530eafce6576e74cf7e7b4817f1",
    "friendship": "a6f4c8c016ca008865f21851074578a22271bfef925b0e663dc53a4863734e56",
}


def _rows(rng: np.random.Generator, n: int, *columns: tuple[str, int]) -> str:
    """n CSV rows, column `name` drawing `name{k}` for k < count (repeats make duplicates)."""
    drawn = [rng.integers(0, count, n) for _, count in columns]
    return "".join(",".join(f"{name}{k}" for (name, _), k in zip(columns, ks)) + "\n" for ks in zip(*drawn))


@pytest.fixture
def dataset(write, write_spec):
    rng = np.random.default_rng(7)
    ratings = _rows(rng, 4000, ("u", 60), ("i", 40)).splitlines()
    write("ratings.csv", "user_id,item_id,rating,timestamp\n" + "".join(
        f"{line},{v / 2},{t}\n" for line, v, t in zip(ratings, rng.integers(1, 11, 4000), rng.integers(0, 90, 4000))
    ))
    write("taggings.csv", "user_id,item_id,tag\n" + _rows(rng, 3000, ("u", 60), ("i", 40), ("t", 25)))
    write("friends-train.csv", "a,b\n" + _rows(rng, 900, ("u", 70), ("u", 70)))
    write("friends-validation.csv", "a,b\n" + _rows(rng, 100, ("u", 70), ("u", 70)))
    return write_spec({
        "name": "golden",
        "modalities": [{"name": "user"}, {"name": "item"}, {"name": "tag"}],
        "relations": [
            {"name": "rating", "modalities": {"user": "user_id", "item": "item_id"}, "value": "rating",
             "time": "timestamp", "duplicates": "last", "source": {"path": "ratings.csv"}},
            {"name": "tagging", "modalities": {"user": "user_id", "item": "item_id", "tag": "tag"},
             "loss": "bpr", "evaluate": {"target": "tag"}, "duplicates": "sum", "source": {"path": "taggings.csv"},
             "split": {"test": 0.2, "validation": 0.1, "seed": 3, "group_by": ["user", "item"]}},
            {"name": "friendship", "axes": [{"modality": "user", "column": "a"}, {"modality": "user", "column": "b"}],
             "loss": "bpr", "duplicates": "mean",
             "sources": {"train": {"path": "friends-train.csv"}, "validation": {"path": "friends-validation.csv"}}},
        ],
        "split": {"test": 0.2, "validation": 0.1, "seed": 1},
        "training": {"rank": 4},
    })


def _digest(run: RunDir, relation: str) -> str:
    digest = hashlib.sha256()
    for split in SPLITS:
        with np.load(run.relation_split(relation, split)) as stored:
            for name in stored.files:
                array = stored[name]
                digest.update(f"{name} {array.dtype.str} {array.shape}".encode())
                digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("memory_limit", [2**16, 2**30])
def test_relation_files_are_byte_identical_to_the_in_memory_writer(dataset, tmp_path, memory_limit):
    run = RunDir(tmp_path / f"run-{memory_limit}")
    ingest(load_spec(dataset), run, tmp_path / "catalog", memory_limit=memory_limit)
    assert {name: _digest(run, name) for name in GOLDEN} == GOLDEN
