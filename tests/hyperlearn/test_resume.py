"""Resume checkpoints: a run stopped after any round carries on from its checkpoint and ends bit-identical to an
uninterrupted run with the same seed (CPU), for joint and distributed trainers, in the search and in the refit."""

import shutil

import numpy as np
import pytest
from distributed import Client, LocalCluster

from hyperlearn.config import TrainingConfig
from hyperlearn.coordinator import train_distributed
from hyperlearn.joint import train_joint
from hyperlearn.rounds import TIMING_KEYS, ResumeMismatch
from hyperlearn.rundir import RunDir
from tests.hyperlearn.planted import write_planted_run

SMALL = TrainingConfig(
    rank=4, conv_width=8, lstm_width=8, diffusion_steps=2, init="random", learning_rate=0.02, rounds=8,
    local_steps=3, patience=3, checkpoint_every=2, refit=True, device="cpu",
)


class Killed(Exception):
    """Stands in for the process dying: raised from the log after a chosen line."""


def killed_after(marker: str):
    def log(line: str) -> None:
        if marker in line:
            raise Killed(line)
    return log


def without_timings(rows):
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def assert_same_result(resumed, uninterrupted):
    assert without_timings(resumed.history) == without_timings(uninterrupted.history)
    assert without_timings([resumed.metrics]) == without_timings([uninterrupted.metrics])
    for modality, state in uninterrupted.states.items():
        np.testing.assert_array_equal(resumed.states[modality].factor, state.factor)
        for relation, bias in state.biases.items():
            np.testing.assert_array_equal(resumed.states[modality].biases[relation], bias)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    return write_planted_run(tmp_path_factory.mktemp("resume"), n_users=60, n_items=40, n_tags=8, n_ratings=900)


def copy_of(run: RunDir, tmp_path, name: str) -> RunDir:
    shutil.copytree(run.path, tmp_path / name)
    return RunDir(tmp_path / name)


@pytest.fixture(scope="module")
def uninterrupted_joint(small_run, tmp_path_factory):
    return train_joint(copy_of(small_run, tmp_path_factory.mktemp("whole"), "run"), SMALL, log=lambda line: None)


@pytest.mark.parametrize("marker", ["round 3/8", "refit on training + validation entries, round 2/"])
def test_a_joint_run_stopped_after_a_round_resumes_bit_identical(small_run, uninterrupted_joint, tmp_path, marker):
    run = copy_of(small_run, tmp_path, "run")
    with pytest.raises(Killed):
        train_joint(run, SMALL, log=killed_after(marker))
    saved = run.load_resume_checkpoint()
    assert saved is not None
    resumed = train_joint(run, SMALL, log=lambda line: None, resume=True)
    assert resumed.resumed_from == {"phase": saved.phase, "round": saved.round}
    assert_same_result(resumed, uninterrupted_joint)


def test_resume_without_a_checkpoint_starts_from_round_zero(small_run, uninterrupted_joint, tmp_path):
    run = copy_of(small_run, tmp_path, "run")
    result = train_joint(run, SMALL, log=lambda line: None, resume=True)
    assert result.resumed_from is None
    assert_same_result(result, uninterrupted_joint)


def test_a_checkpoint_of_other_settings_is_refused_naming_it(small_run, tmp_path):
    run = copy_of(small_run, tmp_path, "run")
    with pytest.raises(Killed):
        train_joint(run, SMALL, log=killed_after("round 2/8"))
    with pytest.raises(ResumeMismatch, match="resume.npz was written by a joint run with settings"):
        train_joint(run, SMALL.replace(learning_rate=0.01), log=lambda line: None, resume=True)


def test_a_fresh_run_drops_an_old_checkpoint(small_run, uninterrupted_joint, tmp_path):
    run = copy_of(small_run, tmp_path, "run")
    with pytest.raises(Killed):
        train_joint(run, SMALL, log=killed_after("round 2/8"))
    assert_same_result(train_joint(run, SMALL, log=lambda line: None), uninterrupted_joint)


def test_the_checkpoint_is_plain_arrays_read_without_pickle(small_run, tmp_path):
    run = copy_of(small_run, tmp_path, "run")
    with pytest.raises(Killed):
        train_joint(run, SMALL, log=killed_after("round 2/8"))
    with np.load(run.resume_checkpoint, allow_pickle=False) as stored:
        kinds = {stored[key].dtype.kind for key in stored.files}
        assert kinds <= {"f", "i", "u", "U", "b"}
        assert any(key.startswith("trainers/optimizer/") for key in stored.files)


@pytest.mark.slow
def test_a_distributed_run_stopped_after_a_round_resumes_bit_identical(small_run, tmp_path):
    with (
        LocalCluster(n_workers=3, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        uninterrupted = train_distributed(client, copy_of(small_run, tmp_path, "whole"), SMALL, log=lambda line: None)
        run = copy_of(small_run, tmp_path, "run")
        with pytest.raises(Killed):
            train_distributed(client, run, SMALL, log=killed_after("round 5/8"))
        resumed = train_distributed(client, run, SMALL, log=lambda line: None, resume=True)
    assert resumed.resumed_from is not None
    assert_same_result(resumed, uninterrupted)
