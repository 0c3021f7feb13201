import numpy as np
import pytest

from hyperlearn.pipeline.deduplication import key_order
from hyperlearn.pipeline.key_ranges import RangeSpill


def _distinct_tuples(rng, shape, n):
    coords = np.stack([rng.integers(0, size, 3 * n) for size in shape])
    _, first = np.unique(coords, axis=1, return_index=True)
    return coords[:, np.sort(first)[:n]]


@pytest.mark.parametrize("shape", [(300, 200), (40, 30, 20), (2000,) * 6])  # the last overflows int64
def test_runs_come_back_whole_in_lexicographic_order_within_the_budget(tmp_path, shape):
    rng = np.random.default_rng(1)
    coords = _distinct_tuples(rng, shape, 5000)
    coords[0, :2500] = 7  # skew: half the entries share the first axis's id
    values = rng.normal(size=5000).astype(np.float32)
    spill = RangeSpill(tmp_path / "train.entries", shape)
    for start in range(0, 5000, 700):  # runs of one partition each, in any order
        spill.append(coords[:, start : start + 700], values[start : start + 700])

    chunks = list(spill.sorted_chunks(budget=600))
    spill.close()

    order = key_order(coords, shape)
    np.testing.assert_array_equal(np.concatenate([c for c, _ in chunks], axis=1), coords[:, order])
    np.testing.assert_array_equal(np.concatenate([v for _, v in chunks]), values[order])
    assert spill.entries == 5000 and len(chunks) > 1
    assert not (tmp_path / "train.entries").exists()


def test_an_empty_split_has_no_chunks(tmp_path):
    spill = RangeSpill(tmp_path / "test.entries", (5, 5))
    spill.append(np.empty((2, 0), dtype=np.int64), np.empty(0, dtype=np.float32))
    assert list(spill.sorted_chunks(budget=10)) == [] and spill.entries == 0
    spill.close()
