from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hyperlearn.pipeline.relations import _combined, assign_splits, key_hashes, relation_meta, split_labels
from hyperlearn.pipeline.spec import RelationSpec, SourceSpec, SplitSpec
from hyperlearn.rundir import SPLITS, Evaluation, Negatives


def _entries(n: int, order: int = 2, offset: int = 0) -> pd.DataFrame:
    """n entries: entry i has user key e{i} (so key tuples are distinct), other keys repeating, value i."""
    numbers = np.arange(offset, offset + n)
    keys = {"key_0": [f"e{i}" for i in numbers]}
    keys |= {f"key_{axis}": [f"m{axis}-{i % (17 + axis)}" for i in numbers] for axis in range(1, order)}
    return pd.DataFrame({name: pd.Series(column, dtype="str") for name, column in keys.items()}).assign(
        value=numbers.astype(np.float64)
    )


def _hashes(entries: pd.DataFrame, axes: tuple[int, ...] | None = None) -> list[np.ndarray]:
    columns = [column for column in entries.columns if column.startswith("key_")]
    return [key_hashes(entries[columns[axis]]) for axis in (range(len(columns)) if axes is None else axes)]


def _assign(entries: pd.DataFrame, axes: tuple[int, ...], *args, **kwargs) -> np.ndarray:
    """assign_splits on the keys of `entries` on `axes`, as split names."""
    return np.asarray(SPLITS)[assign_splits(_hashes(entries, axes), *args, **kwargs)]


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


def test_random_splits_are_deterministic_and_sized_by_the_fractions():
    entries = _entries(4000)
    split = SplitSpec(test=0.2, validation=0.25, seed=3)

    labels = _assign(entries, (0, 1), "all", split)

    np.testing.assert_array_equal(labels, _assign(entries, (0, 1), "all", split))
    counts = pd.Series(labels).value_counts(normalize=True)
    assert counts["test"] == pytest.approx(0.2, abs=0.03)
    assert counts["validation"] == pytest.approx(0.8 * 0.25, abs=0.03)
    other_seed = _assign(entries, (0, 1), "all", SplitSpec(test=0.2, validation=0.25, seed=4))
    assert (other_seed != labels).mean() > 0.2


def test_an_entry_keeps_its_split_when_data_is_added():
    split = SplitSpec(test=0.3, validation=0.1, seed=0)
    before = _assign(_entries(500), (0, 1), "all", split)
    after = _assign(_entries(1000), (0, 1), "all", split)  # same first 500 entries, 500 more
    np.testing.assert_array_equal(after[:500], before)


def test_given_sources_split_train_only_into_validation():
    entries = _entries(1000)
    split = SplitSpec(test=0.5, validation=0.2, seed=0)
    train = pd.Series(_assign(entries, (0, 1), "train", split)).value_counts(normalize=True)
    assert set(train.index) == {"train", "validation"}
    assert train["validation"] == pytest.approx(0.2, abs=0.04)
    assert set(_assign(entries, (0, 1), "test", split)) == {"test"}


def test_given_train_without_validation_keeps_everything_in_train():
    entries = _entries(400)
    split = SplitSpec(test=0.5, validation=0.3, seed=0)
    assert set(_assign(entries, (0, 1), "train", split, carve_validation=False)) == {"train"}
    assert set(_assign(entries, (0, 1), "validation", split)) == {"validation"}


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

    labels = _assign(posts, (0, 1), "all", split)

    per_post = pd.Series(labels).groupby(posts["value"].to_numpy()).nunique()
    assert (per_post == 1).all()  # every post's tags on one side
    first_of_post = pd.Series(labels[::3])
    counts = first_of_post.value_counts(normalize=True)
    assert counts["test"] == pytest.approx(0.2, abs=0.03)
    assert counts["validation"] == pytest.approx(0.8 * 0.25, abs=0.03)
    grown = _assign(_posts(4000), (0, 1), "all", split)
    np.testing.assert_array_equal(grown[: len(labels)], labels)  # stable as posts are added
    ungrouped = _assign(posts, (0, 1, 2), "all", split)
    assert (pd.Series(ungrouped).groupby(posts["value"].to_numpy()).nunique() > 1).any()


def test_split_labels_group_by_axis_names_and_the_meta_carries_the_spec():
    relation = _relation(
        3,
        structure="pairwise",
        negatives=Negatives(axes=(2,), count=7, distribution="popularity"),
        evaluation=Evaluation(target=2, k=(1, 5)),
    )
    posts = _posts(600)
    split = SplitSpec(test=0.3, validation=0.2, seed=0, group_by=("user", "item"))

    labels = np.asarray(SPLITS)[split_labels(relation, _hashes(posts), "all", split, carve_validation=True)]

    assert (pd.Series(labels).groupby(posts["value"].to_numpy()).nunique() == 1).all()
    assert set(labels) == {"train", "validation", "test"}
    meta = relation_meta(relation, (50, 600, 3), (1.0, 4.0))
    assert meta.axes == ("user", "item", "tag") and (meta.value_min, meta.value_max) == (1.0, 4.0)
    assert (meta.structure, meta.negatives, meta.evaluation) == (
        "pairwise", Negatives((2,), 7, "popularity"), Evaluation(2, (1, 5))
    )


def test_a_relation_split_replaces_the_dataset_split():
    relation = _relation(2, split=SplitSpec(test=0.0, validation=0.0))
    labels = split_labels(relation, _hashes(_entries(300)), "all", SplitSpec(test=0.5, validation=0.5), carve_validation=True)
    assert set(labels) == {SPLITS.index("train")}


def test_the_draw_is_the_one_a_frame_of_the_keys_hashed_by_pandas_gives():
    """Splits stay where earlier versions put them: the combined hash is pandas' hash of the key columns."""
    entries = _entries(500, order=3)
    frame = entries[["key_0", "key_1", "key_2"]]
    expected = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    np.testing.assert_array_equal(_combined(_hashes(entries)), expected)
