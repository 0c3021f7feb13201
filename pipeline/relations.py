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
from hyperlearn.rundir import SPLITS, RelationMeta


def key_hashes(keys: Sequence[str] | pd.Index | np.ndarray) -> np.ndarray:
    """A uint64 hash of each key string (pandas' `hash_array`): what a tuple's split is drawn from. Ingest hashes
    each catalog once and takes the hashes of the entries' ids."""
    return pd.util.hash_array(np.asarray(keys, dtype=object), categorize=False)


def assign_splits(
    hashes: Sequence[np.ndarray], source: str, split: SplitSpec, carve_validation: bool = True
) -> np.ndarray:
    """The split of each entry of one source of a relation, as an index into SPLITS (int8).

    `hashes` holds, per axis that decides the split (every axis, or the `split.group_by` axes: then all entries
    of a group share the draw and land together), the `key_hashes` of the entries' keys; the draw is a seeded
    mix of them. `source` "all": `split.test` of the draws go to test, then `split.validation` of the rest to
    validation. "train": `split.validation` to validation when `carve_validation` (no validation source was
    given), the rest to train. "validation", "test": all to it.
    """
    rows = len(hashes[0])
    if source in ("validation", "test"):
        return np.full(rows, SPLITS.index(source), dtype=np.int8)
    draw = _uniform(_combined(hashes), split.seed)
    test_fraction = split.test if source == "all" else 0.0
    validation_fraction = split.validation if source == "all" or carve_validation else 0.0
    validation_end = test_fraction + (1 - test_fraction) * validation_fraction
    labels = np.full(rows, SPLITS.index("train"), dtype=np.int8)
    labels[draw < validation_end] = SPLITS.index("validation")
    labels[draw < test_fraction] = SPLITS.index("test")
    return labels


def split_axes(relation: RelationSpec, split: SplitSpec) -> tuple[int, ...]:
    """The axes whose keys decide a tuple's split: the `group_by` axes, else every axis."""
    if split.group_by is None:
        return tuple(range(relation.order))
    return tuple(relation.axis(name) for name in split.group_by)


def split_labels(
    relation: RelationSpec, hashes: Sequence[np.ndarray], source: str, split: SplitSpec, carve_validation: bool
) -> np.ndarray:
    """The split (index into SPLITS) of each of a relation's entries read from `source`, given the
    `key_hashes` of their keys on every axis: by the relation's own split settings when it has them, else by
    the dataset's `split`; `carve_validation` when the relation has no validation source."""
    split = relation.split or split
    return assign_splits([hashes[axis] for axis in split_axes(relation, split)], source, split, carve_validation)


def relation_meta(
    relation: RelationSpec, shape: tuple[int, ...], value_range: tuple[float, float] | None
) -> RelationMeta:
    """What the relation's tensor means (axes, structure, negatives and evaluation from the spec), with the
    (min, max) of its training values (None: no training entry)."""
    return RelationMeta(
        name=relation.name,
        modalities=relation.modalities,
        shape=shape,
        loss=relation.loss,
        weight=relation.weight,
        value_min=None if value_range is None else float(value_range[0]),
        value_max=None if value_range is None else float(value_range[1]),
        axes=relation.axes,
        structure=relation.structure,
        negatives=relation.negatives,
        evaluation=relation.evaluation,
    )


def _combined(hashes: Sequence[np.ndarray]) -> np.ndarray:
    """One hash per row from its columns' hashes, combined as `pandas.util.hash_pandas_object` combines a
    frame's columns (CPython's tuple hash), so a tuple draws the split it drew when it was hashed as a frame."""
    multiplier = np.uint64(1000003)
    out = np.full(len(hashes[0]), 0x345678, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for position, column in enumerate(hashes):
            out ^= column
            out *= multiplier
            multiplier += np.uint64(82520 + 2 * (len(hashes) - position))
        return out + np.uint64(97531)


def _uniform(hashes: np.ndarray, seed: int) -> np.ndarray:
    """A number in [0, 1) per row, fixed by the row's hash and the seed."""
    mixed = _splitmix64(hashes ^ _splitmix64(np.array([seed], dtype=np.uint64)))
    return (mixed >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: spreads nearby 64-bit inputs over the whole range (array arithmetic wraps)."""
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))
