"""Checkpoints written in the background: in order, complete when the block ends, and a failed write still fails
the run."""

from __future__ import annotations

import numpy as np
import pytest

from hyperlearn.checkpointing import CheckpointWriter
from hyperlearn.rundir import ModalityState, RunDir


def _states(value: float) -> dict[str, ModalityState]:
    return {"user": ModalityState(np.full((3, 2), value, np.float32), {"rating": np.full(3, value, np.float32)})}


def test_the_last_of_several_writes_is_on_disk_when_the_block_ends(tmp_path):
    run = RunDir(tmp_path / "run")
    with CheckpointWriter(run) as writer:
        for round_number in range(1, 6):
            writer.best(_states(float(round_number)), round_number)
    states, round_number = run.load_checkpoint()
    assert round_number == 5
    np.testing.assert_array_equal(states["user"].factor, np.full((3, 2), 5.0, np.float32))


def test_a_write_that_fails_raises_at_the_next_flush_naming_the_path(tmp_path):
    blocker = tmp_path / "run"
    blocker.write_text("a file where the run's folder should be")
    writer = CheckpointWriter(RunDir(blocker))
    writer.best(_states(1.0), 1)
    with pytest.raises(OSError, match="run"):
        writer.flush()
    writer.__exit__(None, None, None)


def test_without_a_run_nothing_is_written(tmp_path):
    with CheckpointWriter(None) as writer:
        writer.best(_states(1.0), 1)
    assert list(tmp_path.iterdir()) == []
