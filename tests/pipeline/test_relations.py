from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hyperlearn.pipeline.catalog import EntityCatalog
from hyperlearn.pipeline.relations import assign_splits, build_relation
from hyperlearn.pipeline.spec import RelationSpec, SourceSpec, SplitSpec
from hyperlearn.rundir import Evaluation, Negatives, RunDir


def _entries(n: int, order: int = 2, offset: int = 0) -> pd.DataFrame:
    """n entries: entry i has user key e{i} (so key tuples are distinct), other keys repeating, value i."""
    numbers = np.arange(offset, offset + n)
    keys = {"key_0": [f"e{i}" for i in numbers]}
    keys |= {f"key_{axis}": [f"m{axis}-{i % (17 + axis)}" for i in numbers] for axis in range(1, order)}
    return pd.DataFrame({name: pd.Series(column, dtype="str") for name, column in keys.items()}).assign(
        value=numbers.astype(np.float64)
    )


def _relation(order: int, sources: tuple[str, ...] = ("all",), **fields) -> RelationSpec:
    names = ("user", "item", "tag")[:order]
    return RelationSpec(
        **fields,
        name="r",
        modalities=names,
        key_columns=names,
        value="v",
        loss="squared",
        weight=2.0,
        time=None,
        duplicates="last",
        sources={source: SourceSpec(path=Path(f"{source}.csv"), format="csv") for source in sources},
    )


def _catalogs(relation: RelationSpec, entries: dict[str, pd.DataFrame]) -> dict[str, EntityCatalog]:
    catalogs = {name: EntityCatalog(name) for name in relation.modalities}
    for frame in entries.values():
        for axis, name in enumerate(relation.modalities):
            catalogs[name].assign(frame[f"key_{axis}"])
    return catalogs


def test_random_splits_are_deterministic_and_sized_by_the_fractions():
    entries = _entries(4000)
    split = SplitSpec(test=0.2, validation=0.25, seed=3)

    labels = assign_splits(entries, "all", split, (0, 1))

    np.testing.assert_array_equal(labels, assign_splits(entries, "all", split, (0, 1)))
    counts = pd.Series(labels).value_counts(normalize=True)
    assert counts["test"] == pytest.approx(0.2, abs=0.03)
    assert counts["validation"] == pytest.approx(0.8 * 0.25, abs=0.03)
    other_seed = assign_splits(entries, "all", SplitSpec(test=0.2, validation=0.25, seed=4), (0, 1))
    assert (other_seed != labels).mean() > 0.2


def test_an_entry_keeps_its_split_when_data_is_added():
    split = SplitSpec(test=0.3, validation=0.1, seed=0)
    before = assign_splits(_entries(500), "all", split, (0, 1))
    after = assign_splits(_entries(1000), "all", split, (0, 1))  # same first 500 entries, 500 more
    np.testing.assert_array_equal(after[:500], before)


def test_given_sources_split_train_only_into_validation():
    entries = _entries(1000)
    split = SplitSpec(test=0.5, validation=0.2, seed=0)
    train = pd.Series(assign_splits(entries, "train", split, (0, 1))).value_counts(normalize=True)
    assert set(train.index) == {"train", "validation"}
    assert train["validation"] == pytest.approx(0.2, abs=0.04)
    assert set(assign_splits(entries, "test", split, (0, 1))) == {"test"}


@pytest.mark.parametrize("order", [2, 3])
def test_build_relation_splits_are_disjoint_and_cover_the_entries(tmp_path, order):
    relation = _relation(order)
    entries = {"all": _entries(300, order)}
    catalogs = _catalogs(relation, entries)
    catalogs["user"].assign(["zz-unused"])  # shape follows the catalog, not only the keys seen

    tensors, meta = build_relation(relation, entries, catalogs, SplitSpec(test=0.2, validation=0.1, seed=0))
    run = RunDir(tmp_path)
    run.write_relation(meta, tensors)

    shape = tuple(len(catalogs[name]) for name in relation.modalities)
    assert shape[0] == 301
    assert meta == run.read_relation_meta("r")
    assert (meta.modalities, meta.shape, meta.loss, meta.weight) == (relation.modalities, shape, "squared", 2.0)
    seen = []
    for name in ("train", "validation", "test"):
        tensor = run.read_relation_split("r", name)
        assert tensor.shape == shape and tensor.coords.shape[0] == order
        assert tensor.nnz == tensors[name].nnz > 0
        seen.extend(map(tuple, tensor.coords.T))
    assert len(seen) == len(set(seen)) == 300  # disjoint, and every entry in one split
    train = tensors["train"].values
    assert (meta.value_min, meta.value_max) == (train.min(), train.max())
    # values travel with their coordinates: entry i has value i and user key e{i}
    users = catalogs["user"].keys.to_numpy()
    for name, tensor in tensors.items():
        assert all(users[i] == f"e{int(v)}" for i, v in zip(tensor.coords[0], tensor.values))


def test_build_relation_with_given_train_and_test():
    relation = _relation(2, sources=("train", "test"))
    entries = {"train": _entries(200), "test": _entries(50, offset=200)}
    catalogs = _catalogs(relation, entries)

    tensors, _ = build_relation(relation, entries, catalogs, SplitSpec(test=0.9, validation=0.1, seed=0))

    assert tensors["test"].nnz == 50
    assert tensors["train"].nnz + tensors["validation"].nnz == 200
    assert set(tensors["test"].values) == set(range(200, 250))


def test_keys_must_be_in_the_catalog_first():
    relation = _relation(2)
    entries = {"all": _entries(10)}
    catalogs = {"user": EntityCatalog("user"), "item": EntityCatalog("item")}
    with pytest.raises(ValueError, match="relation 'r': keys of modality 'user' not in its catalog"):
        build_relation(relation, entries, catalogs, SplitSpec())


def test_given_train_without_validation_keeps_everything_in_train():
    entries = _entries(400)
    split = SplitSpec(test=0.5, validation=0.3, seed=0)
    assert set(assign_splits(entries, "train", split, (0, 1), carve_validation=False)) == {"train"}
    assert set(assign_splits(entries, "validation", split, (0, 1))) == {"validation"}


def _posts(n_posts: int, tags_per_post: int = 3) -> pd.DataFrame:
    """Taggings: post p is (user u{p % 50}, item i{p}) with tags t0 … t{k-1}; value p."""
    posts = np.repeat(np.arange(n_posts), tags_per_post)
    return pd.DataFrame(
        {
            "key_0": pd.Series([f"u{p % 50}" for p in posts], dtype="str"),
            "key_1": pd.Series([f"i{p}" for p in posts], dtype="str"),
            "key_2": pd.Series([f"t{t}" for t in np.tile(np.arange(tags_per_post), n_posts)], dtype="str"),
            "value": posts.astype(np.float64),
        }
    )


def test_group_by_keeps_groups_whole_stable_and_sized():
    split = SplitSpec(test=0.2, validation=0.25, seed=5, group_by=("user", "item"))
    posts = _posts(3000)

    labels = assign_splits(posts, "all", split, (0, 1))

    per_post = pd.Series(labels).groupby(posts["value"].to_numpy()).nunique()
    assert (per_post == 1).all()  # every post's tags on one side
    first_of_post = pd.Series(labels[::3])
    counts = first_of_post.value_counts(normalize=True)
    assert counts["test"] == pytest.approx(0.2, abs=0.03)
    assert counts["validation"] == pytest.approx(0.8 * 0.25, abs=0.03)
    grown = assign_splits(_posts(4000), "all", split, (0, 1))
    np.testing.assert_array_equal(grown[: len(labels)], labels)  # stable as posts are added
    ungrouped = assign_splits(posts, "all", split, (0, 1, 2))
    assert (pd.Series(ungrouped).groupby(posts["value"].to_numpy()).nunique() > 1).any()


def test_build_relation_groups_by_axis_names_and_carries_the_spec_into_the_meta():
    relation = _relation(
        3,
        structure="pairwise",
        negatives=Negatives(axes=(2,), count=7, distribution="popularity"),
        evaluation=Evaluation(target=2, k=(1, 5)),
    )
    entries = {"all": _posts(600)}
    catalogs = _catalogs(relation, entries)
    split = SplitSpec(test=0.3, validation=0.2, seed=0, group_by=("user", "item"))

    tensors, meta = build_relation(relation, entries, catalogs, split)

    posts_in = {
        name: {tuple(pair) for pair in tensor.coords[:2].T} for name, tensor in tensors.items()
    }
    assert not posts_in["train"] & posts_in["test"] and not posts_in["train"] & posts_in["validation"]
    assert sum(t.nnz for t in tensors.values()) == 1800
    assert meta.axes == ("user", "item", "tag")
    assert (meta.structure, meta.negatives, meta.evaluation) == (
        "pairwise", Negatives((2,), 7, "popularity"), Evaluation(2, (1, 5))
    )


def test_build_relation_with_given_validation_source_and_no_test():
    relation = _relation(2, sources=("train", "validation"))
    entries = {"train": _entries(200), "validation": _entries(30, offset=200)}

    tensors, _ = build_relation(relation, entries, _catalogs(relation, entries), SplitSpec(test=0.5, validation=0.5))

    assert (tensors["train"].nnz, tensors["validation"].nnz, tensors["test"].nnz) == (200, 30, 0)


def test_a_modality_on_two_axes_uses_one_catalog():
    relation = RelationSpec(
        name="friend", modalities=("user", "user"), key_columns=("a", "b"), value=1.0, loss="logistic", weight=1.0,
        time=None, duplicates="last", sources={"all": SourceSpec(path=Path("f.csv"), format="csv")},
    )
    entries = {"all": pd.DataFrame({"key_0": ["u1", "u2"], "key_1": ["u2", "u3"], "value": [1.0, 1.0]})}
    catalog = EntityCatalog("user")
    catalog.assign(pd.concat([entries["all"]["key_0"], entries["all"]["key_1"]]))

    tensors, meta = build_relation(relation, entries, {"user": catalog}, SplitSpec(test=0.0, validation=0.0))

    assert meta.shape == (3, 3) and meta.axes == ("a", "b") and meta.axes_of("user") == (0, 1)
    assert sorted(map(tuple, tensors["train"].coords.T)) == [(0, 1), (1, 2)]


def test_a_relation_split_replaces_the_dataset_split():
    relation = _relation(2, split=SplitSpec(test=0.0, validation=0.0))
    entries = {"all": _entries(300)}

    tensors, _ = build_relation(relation, entries, _catalogs(relation, entries), SplitSpec(test=0.5, validation=0.5))

    assert (tensors["train"].nnz, tensors["validation"].nnz, tensors["test"].nnz) == (300, 0, 0)
