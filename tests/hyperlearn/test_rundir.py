"""The run directory: relation splits, Laplacians and checkpoints round-trip, written where the layout says."""

import numpy as np
import scipy.sparse

from hyperlearn.rundir import SPLITS, DatasetDir, Entries, ModalityState, RelationMeta, RunDir


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
