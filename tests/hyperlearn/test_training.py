"""Distributed (one trainer actor per modality on a real Dask cluster) against joint training, on planted data."""

import os
import re
import signal
import time

import numpy as np
import pytest
from distributed import Client, LocalCluster

from hyperlearn.config import TrainingConfig
from hyperlearn.coordinator import DaskTrainers, TrainerLost, place_modalities, train_distributed
from hyperlearn.joint import JointTrainers, train_joint
from hyperlearn.metrics import evaluate
from hyperlearn.problem import load_problem, with_validation_in_training
from hyperlearn.rounds import TIMING_KEYS
from hyperlearn.rundir import Entries
from hyperlearn.workers import cluster_workers
from tests.hyperlearn.planted import NOISE, write_planted_run

# From a random start, so the test measures what training learns, not what ALS already found.
FROM_SCRATCH = TrainingConfig(
    rank=4, conv_width=16, lstm_width=16, diffusion_steps=4, init="random", learning_rate=0.02,
    rounds=30, local_steps=10, graph_weight=0.1, patience=30, device="cpu",
)


def untimed(rows: list[dict]) -> list[dict]:
    """The rows without their wall-clock times, which differ between identical runs."""
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


@pytest.fixture(scope="module")
def dense_planted_run(tmp_path_factory):
    return write_planted_run(tmp_path_factory.mktemp("dense"), n_ratings=12000, tagging_weight=0.2)


@pytest.fixture(scope="module")
def process_client():
    with LocalCluster(n_workers=3, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster) as client:
            yield client


@pytest.mark.slow
def test_distributed_and_joint_reach_the_noise_level_and_agree(dense_planted_run, process_client):
    logged = []
    distributed = train_distributed(process_client, dense_planted_run, FROM_SCRATCH, log=logged.append)
    joint = train_joint(dense_planted_run, FROM_SCRATCH, log=lambda line: None)
    assert sum("trainer for" in line for line in logged) == 3
    assert len({line.split(" on ")[1] for line in logged if "trainer for" in line}) == 3, "one worker per modality"
    for result in (distributed, joint):
        assert result.metrics["test_rmse"] < 1.3 * NOISE
        assert result.metrics["test/tagging/ndcg@10"] > result.metrics["test/tagging/popularity_ndcg@10"]
        assert result.history[-1]["train_loss"] < 0.5 * result.history[0]["train_loss"]
    gap = abs(distributed.metrics["test_rmse"] - joint.metrics["test_rmse"]) / joint.metrics["test_rmse"]
    assert gap < 0.05


@pytest.mark.slow
def test_distributed_training_and_its_refit_are_deterministic(planted_run, process_client):
    config = FROM_SCRATCH.replace(rounds=3, patience=3, refit=True)
    logged = []
    first = train_distributed(process_client, planted_run, config, log=logged.append)
    second = train_distributed(process_client, planted_run, config, log=lambda line: None)
    assert first.metrics["refit_rounds"] == first.metrics["best_round"] > 0
    assert sum("refit on training + validation" in line for line in logged) == first.metrics["best_round"]
    for modality in first.factors:
        np.testing.assert_array_equal(first.factors[modality], second.factors[modality])
    assert untimed([first.metrics]) == untimed([second.metrics])


@pytest.mark.parametrize("refit", [False, True])
def test_early_stopping_and_refit_never_read_test_data(tmp_path, refit):
    """Garbage in the test split changes nothing about training: same history, same best round and state."""
    clean = write_planted_run(tmp_path / "clean")
    poisoned = write_planted_run(tmp_path / "poisoned")
    meta = poisoned.read_relation_meta("rating")
    splits = {split: poisoned.read_relation_split("rating", split) for split in ("train", "validation", "test")}
    test = splits["test"]
    poisoned.write_relation(meta, {**splits, "test": Entries(test.coords, np.full_like(test.values, np.nan), test.shape)})
    config = TrainingConfig(
        rank=4, conv_width=8, lstm_width=8, diffusion_steps=2, rounds=4, patience=2, refit=refit, device="cpu"
    )
    a = train_joint(clean, config, log=lambda line: None)
    b = train_joint(poisoned, config, log=lambda line: None)
    assert untimed(a.history) == untimed(b.history)
    assert a.metrics["best_round"] == b.metrics["best_round"]
    np.testing.assert_array_equal(a.factors["user"], b.factors["user"])
    assert np.isnan(b.metrics["test_rmse"]) and not np.isnan(a.metrics["test_rmse"])


def test_refit_trains_the_best_round_count_afresh_on_training_and_validation_entries(planted_run):
    config = FROM_SCRATCH.replace(rounds=4, patience=4)
    chosen = train_joint(planted_run, config, log=lambda line: None)
    refitted = train_joint(planted_run, config.replace(refit=True), log=lambda line: None)
    best_round = int(chosen.metrics["best_round"])
    assert refitted.metrics["best_round"] == best_round == refitted.metrics["refit_rounds"]
    assert untimed(refitted.history) == untimed(chosen.history)
    problem = load_problem(planted_run)
    trainers = JointTrainers(with_validation_in_training(problem), config)
    states = trainers.start()
    for _ in range(best_round):
        states = trainers.round(states)
    for modality, state in states.items():
        np.testing.assert_array_equal(refitted.factors[modality], state.factor)
    fit = {name: evaluate(problem.relations[0], result.states, "validation", 0)
           for name, result in (("chosen", chosen), ("refitted", refitted))}
    assert fit["refitted"]["validation/rating/rmse"] < fit["chosen"]["validation/rating/rmse"]
    assert refitted.metrics["validation/rating/rmse"] == chosen.metrics["validation/rating/rmse"]


@pytest.mark.gpu
def test_joint_training_on_the_gpu_matches_the_cpu(planted_run):
    """The same trainer code on `cuda` reaches the CPU result up to float32 reduction order."""
    config = TrainingConfig(rank=4, conv_width=8, lstm_width=8, diffusion_steps=2, rounds=3, patience=3)
    on_cpu = train_joint(planted_run, config.replace(device="cpu"), log=lambda line: None)
    on_gpu = train_joint(planted_run, config.replace(device="cuda"), log=lambda line: None)
    assert on_gpu.metrics["test_rmse"] == pytest.approx(on_cpu.metrics["test_rmse"], rel=1e-3)
    for modality in on_cpu.factors:
        np.testing.assert_allclose(on_gpu.factors[modality], on_cpu.factors[modality], atol=1e-3)


def kill_worker_of(client, trainers, modality):
    victim = trainers.placement[modality]
    os.kill(client.run(os.getpid, workers=[victim])[victim], signal.SIGKILL)
    return victim


@pytest.mark.slow
def test_a_killed_trainer_worker_is_rebuilt_from_its_snapshot_and_the_round_completes(planted_run):
    with (
        LocalCluster(n_workers=3, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        problem = load_problem(planted_run)
        placement, _ = place_modalities(problem.sizes, cluster_workers(client))
        recovered, logged = [], []
        trainers = DaskTrainers(client, planted_run, problem, FROM_SCRATCH, placement, False, recovered, logged.append)
        states = trainers.round(trainers.start())
        snapshot = trainers.snapshot()
        states = trainers.round(states)
        victim = kill_worker_of(client, trainers, "tag")
        states = trainers.round(states)
        assert [(e["modality"], e["round"], e["from_round"], e["lost_worker"]) for e in recovered] == [
            ("tag", 3, 1, victim)
        ]
        assert trainers.placement["tag"] != victim and trainers.placement["tag"] in cluster_workers(client)
        assert any("rebuilt on" in line for line in logged)
        rebuilt = trainers.snapshot()
        assert rebuilt["tag/optimizer/0/step"] == snapshot["tag/optimizer/0/step"] + FROM_SCRATCH.local_steps
        assert all(np.isfinite(state.factor).all() for state in states.values())
        trainers.close()


@pytest.mark.slow
def test_a_killed_trainer_worker_fails_the_round_at_once_naming_worker_and_modality_when_it_cannot_recover(
    planted_run, monkeypatch
):
    monkeypatch.setattr("hyperlearn.coordinator.MAX_RECOVERIES", 0)
    with (
        LocalCluster(n_workers=3, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        problem = load_problem(planted_run)
        placement, _ = place_modalities(problem.sizes, cluster_workers(client))
        trainers = DaskTrainers(client, planted_run, problem, FROM_SCRATCH, placement, fit_validation=False)
        states = trainers.round(trainers.start())
        victim = kill_worker_of(client, trainers, "tag")
        started = time.monotonic()
        with pytest.raises(TrainerLost, match=rf"worker {re.escape(victim)} training modality 'tag' left the cluster"):
            for _ in range(10):
                states = trainers.round(states)
        assert time.monotonic() - started < 60
        trainers.close()
