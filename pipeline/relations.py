"""Relation tensors' splits and meaning: which split each entry goes to, and the meta its tensor carries.

Splits are drawn per entry from a seeded hash of its key tuple rather than from a shuffled order: an entry
lands in the same split whatever else the data holds, so when a later run adds rows, earlier test entries stay
test entries (warm-started factors never saw them), and relations over the same modalities agree on which
tuples are held out. With `split.group_by`, the hash is of the group's keys, so a group (a post's tags) is
never cut across splits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from hyperlearn.pipeline.spec import RelationSpec, SplitSpec
from hyperlearn.pipeline.validation import key_column
from hyperlearn.rundir import RelationMeta


def assign_splits(
    entries: pd.DataFrame, source: str, split: SplitSpec, key_axes: Sequence[int], carve_validation: bool = True
) -> np.ndarray:
    """Split label (train / validation / test) of each entry of one source of a relation.

    The draw is a seeded hash of the keys on `key_axes` (every axis, or the `split.group_by` axes: then all
    entries of a group share it and land together). `source` "all": `split.test` of the draws go to test, then
    `split.validation` of the rest to validation. "train": `split.validation` to validation when
    `carve_validation` (no validation source was given), the rest to train. "validation", "test": all to it.
    """
    if source in ("validation", "test"):
        return np.full(len(entries), source, dtype=object)
    draw = _uniform(entries[[key_column(axis) for axis in key_axes]], split.seed)
    test_fraction = split.test if source == "all" else 0.0
    validation_fraction = split.validation if source == "all" or carve_validation else 0.0
    validation_end = test_fraction + (1 - test_fraction) * validation_fraction
    return np.where(draw < test_fraction, "test", np.where(draw < validation_end, "validation", "train")).astype(object)


def split_axes(relation: RelationSpec, split: SplitSpec) -> tuple[int, ...]:
    """The axes whose keys decide a tuple's split: the `group_by` axes, else every axis."""
    if split.group_by is None:
        return tuple(range(relation.order))
    return tuple(relation.axis(name) for name in split.group_by)


def split_labels(
    relation: RelationSpec, keys: pd.DataFrame, source: str, split: SplitSpec, carve_validation: bool
) -> np.ndarray:
    """The split of each of a relation's entries (key columns key_0 … key_{K-1}) read from `source`: by the
    relation's own split settings when it has them, else by the dataset's `split`; `carve_validation` when the
    relation has no validation source."""
    split = relation.split or split
    return assign_splits(keys, source, split, split_axes(relation, split), carve_validation)


def relation_meta(relation: RelationSpec, shape: tuple[int, ...], train_values: np.ndarray) -> RelationMeta:
    """What the relation's tensor means (axes, structure, negatives and evaluation from the spec), with the range
    of its training values."""
    return RelationMeta(
        name=relation.name,
        modalities=relation.modalities,
        shape=shape,
        loss=relation.loss,
        weight=relation.weight,
        value_min=float(train_values.min()) if train_values.size else None,
        value_max=float(train_values.max()) if train_values.size else None,
        axes=relation.axes,
        structure=relation.structure,
        negatives=relation.negatives,
        evaluation=relation.evaluation,
    )


def _uniform(keys: pd.DataFrame, seed: int) -> np.ndarray:
    """A number in [0, 1) per row, fixed by the row's keys (as strings) and the seed."""
    hashes = pd.util.hash_pandas_object(keys, index=False).to_numpy(dtype=np.uint64)
    mixed = _splitmix64(hashes ^ _splitmix64(np.array([seed], dtype=np.uint64)))
    return (mixed >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: spreads nearby 64-bit inputs over the whole range (array arithmetic wraps)."""
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))
