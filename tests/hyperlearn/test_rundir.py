"""The run directory: relation splits, Laplacians and checkpoints round-trip, written where the layout says."""

import zipfile

import numpy as np
import pytest
import scipy.sparse

from hyperlearn.rundir import SPLITS, DatasetDir, Entries, ModalityState, RelationMeta, RunDir, SplitWriter


def test_checkpoint_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    states = {
        "user": ModalityState(rng.normal(size=(4, 3)), {"rating": rng.normal(size=4), "tagging": rng.normal(size=4)}),
        "tag": ModalityState(rng.normal(size=(2, 3)), {"tagging": rng.normal(size=2)}),
    }
    run = RunDir(tmp_path)
    run.save_checkpoint(states, round_number=7)
    loaded, round_number = run.load_checkpoint()
    assert round_number == 7 and set(loaded) == {"user", "tag"}
    for name, state in states.items():
        np.testing.assert_array_equal(loaded[name].factor, state.factor)
        assert set(loaded[name].biases) == set(state.biases)
        for relation, bias in state.biases.items():
            np.testing.assert_array_equal(loaded[name].biases[relation], bias)
    assert [p.name for p in run.checkpoints.iterdir()] == ["best.npz"]


def test_relation_round_trip_keeps_explicit_zeros_and_order(tmp_path):
    run = RunDir(tmp_path)
    meta = RelationMeta("rating", ("user", "item"), (3, 2), "squared", 2.0, 0.0, 5.0)
    splits = {split: Entries(np.array([[0, 2], [1, 0]]), np.array([0.0, 5.0], np.float32), (3, 2)) for split in SPLITS}
    run.write_relation(meta, splits)
    assert run.relation_names() == ["rating"] and run.read_relation_meta("rating") == meta
    for split in SPLITS:
        loaded = run.read_relation_split("rating", split)
        np.testing.assert_array_equal(loaded.coords, splits[split].coords)
        assert loaded.values.tolist() == [0.0, 5.0] and loaded.shape == (3, 2)


def test_relations_keep_the_order_they_were_written_in(tmp_path):
    run = RunDir(tmp_path)
    for name in ("tagging", "rating", "friendship"):
        empty = Entries(np.zeros((2, 0), np.int64), np.zeros(0, np.float32), (2, 2))
        run.write_relation(RelationMeta(name, ("a", "b"), (2, 2), "squared"), {split: empty for split in SPLITS})
    assert run.relation_names() == ["tagging", "rating", "friendship"]
    run.remove_relation("rating")
    assert run.relation_names() == ["tagging", "friendship"] and not run.relation("rating").exists()
    run.order_relations(["friendship", "tagging"])
    assert run.relation_names() == ["friendship", "tagging"]
    with pytest.raises(ValueError, match="not an order"):
        run.order_relations(["friendship"])


def test_an_order_six_relation_over_2000_entities_per_mode_loads(tmp_path):
    """2000⁶ > 2⁶³: nothing may form a linear index over the shape."""
    shape = (2000,) * 6
    coords = np.random.default_rng(0).integers(2000, size=(6, 50))
    run = RunDir(tmp_path)
    meta = RelationMeta("wide", tuple(f"m{k}" for k in range(6)), shape, "logistic")
    run.write_relation(meta, {split: Entries(coords, np.ones(50, np.float32), shape) for split in SPLITS})
    loaded = run.read_relation_split("wide", "train")
    assert loaded.shape == shape and loaded.nnz == 50
    np.testing.assert_array_equal(loaded.coords, coords)


def test_laplacian_is_none_without_a_graph(tmp_path):
    run = RunDir(tmp_path)
    assert run.read_laplacian("user") is None
    run.write_laplacian("user", scipy.sparse.identity(3))
    assert run.read_laplacian("user").shape == (3, 3)


def test_dataset_dir_layout(tmp_path):
    dataset = DatasetDir(tmp_path / "demo")
    assert dataset.catalog == tmp_path / "demo" / "catalog" and dataset.latest == tmp_path / "demo" / "latest"
    assert dataset.staging("v1").path == tmp_path / "demo" / ".staging-v1"
    assert dataset.version("v1").embedding_dir("user") == tmp_path / "demo" / "v1" / "embeddings" / "modality=user"


def test_a_split_written_in_chunks_has_the_bytes_np_savez_writes_for_the_whole_arrays(tmp_path):
    rng = np.random.default_rng(0)
    coords = np.ascontiguousarray(rng.integers(0, 50, (3, 1000)))
    values = rng.normal(size=1000).astype(np.float32)
    np.savez(tmp_path / "whole.npz", coords=coords, data=values, shape=np.asarray((50, 50, 50)))

    with SplitWriter(tmp_path / "train.npz", (50, 50, 50)) as writer:
        for start in range(0, 1000, 300):
            writer.append(coords[:, start : start + 300], values[start : start + 300])

    with zipfile.ZipFile(tmp_path / "whole.npz") as whole, zipfile.ZipFile(tmp_path / "train.npz") as chunked:
        assert chunked.namelist() == whole.namelist()
        assert all(chunked.read(name) == whole.read(name) for name in whole.namelist())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.npz", "whole.npz"]  # no scratch left


def test_a_split_writer_that_fails_leaves_no_scratch(tmp_path):
    with pytest.raises(RuntimeError), SplitWriter(tmp_path / "train.npz", (4, 4)) as writer:
        writer.append(np.zeros((2, 3), dtype=np.int64), np.ones(3))
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []
