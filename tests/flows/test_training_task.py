import numpy as np
import pytest

from hyperlearn.config import MemoryBudgetError, TrainingConfig
from hyperlearn.flows.training import train
from hyperlearn.rundir import Entries, RelationMeta, RunDir


def test_a_rank_too_large_for_the_runs_entities_is_refused_before_training(tmp_path):
    run = RunDir(tmp_path)
    empty = Entries(np.zeros((3, 0), dtype=np.int64), np.zeros(0, dtype=np.float32), (1_000_000, 50, 1_000_000))
    meta = RelationMeta("triple", ("entity", "kind", "entity"), empty.shape, "softmax", axes=("head", "kind", "tail"))
    run.write_relation(meta, {"train": empty, "validation": empty, "test": empty})

    assert run.entity_counts() == {"entity": 1_000_000, "kind": 50}
    with pytest.raises(MemoryBudgetError, match=r"rank 100000 needs at least .*entity 1000000, kind 50"):
        train(run, TrainingConfig(rank=100_000, encoder="none"), mode="joint")


class _StuckCluster:
    """Stands in for a cluster whose workers will not stop in time."""

    def close(self):
        raise TimeoutError("workers did not stop within 4 s")


def test_a_teardown_that_fails_is_logged_and_never_raised():
    from hyperlearn.flows.training import _close

    logged: list[str] = []
    _close(_StuckCluster(), logged.append)
    assert logged == ["closing the Dask _StuckCluster failed, ignored: TimeoutError: workers did not stop within 4 s"]
