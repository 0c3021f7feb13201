"""Placing trainers on workers: resources, largest modalities first, co-location; and their data sent by Dask."""

from __future__ import annotations

import numpy as np
import pytest
from distributed import Client, Scheduler, SpecCluster, Worker

from hyperlearn.config import TrainingConfig
from hyperlearn.coordinator import DaskTrainers, place_modalities
from hyperlearn.problem import load_problem
from hyperlearn.workers import cluster_workers

SIZES = {"item": 160, "tag": 20, "user": 240}
SMALL = TrainingConfig(rank=4, conv_width=8, lstm_width=8, init="random", local_steps=1, device="cpu")


def _workers(**resources: dict[str, float]) -> dict[str, dict]:
    """Scheduler-style worker info by address, with the resources each declares."""
    return {address: {"nthreads": 1, "resources": declared} for address, declared in resources.items()}


def test_the_largest_modalities_are_spread_first_and_the_rest_share_a_worker_with_a_log_line():
    logged = []
    placement, resource = place_modalities(SIZES, _workers(w1={}, w2={}), logged.append)
    assert placement == {"item": "w2", "tag": "w1", "user": "w1"}
    assert list(placement) == list(SIZES), "in the problem's modality order"
    assert resource is None
    assert logged == ["[distributed] 3 trainers on 2 worker(s): 'user', 'tag' share w1"]


def test_one_trainer_per_worker_logs_nothing():
    logged = []
    placement, _ = place_modalities(SIZES, _workers(w3={}, w1={}, w2={}), logged.append)
    assert sorted(placement.values()) == ["w1", "w2", "w3"]
    assert placement["user"] == "w1"
    assert logged == []


@pytest.mark.parametrize("name", ["trainer", "GPU"])
def test_only_workers_declaring_the_trainer_resource_host_trainers(name):
    logged = []
    workers = _workers(a={}, b={name: 1}, c={"memory_hog": 1}, d={name: 1})
    placement, resource = place_modalities({"item": 160, "user": 240}, workers, logged.append)
    assert resource == name
    assert placement == {"item": "d", "user": "b"}
    assert logged == [f"[distributed] trainers request the {name!r} resource: 2 of 4 worker(s) declare it"]


def test_a_trainer_resource_wins_over_gpus_and_its_amount_is_the_workers_trainer_slots():
    logged = []
    workers = _workers(big={"trainer": 2, "GPU": 1}, small={"trainer": 1, "GPU": 1})
    placement, resource = place_modalities(SIZES, workers, logged.append)
    assert resource == "trainer"
    assert placement == {"item": "small", "tag": "big", "user": "big"}, "the two largest on different workers"
    assert not any("share" in line for line in logged), "three slots for three trainers: nobody is co-located"


def test_a_cluster_without_workers_for_trainers_is_refused():
    with pytest.raises(RuntimeError, match="no workers"):
        place_modalities(SIZES, {})


@pytest.fixture()
def stand_in_cluster():
    """Four threaded workers, as dask-cuda tests its multi-GPU logic: two declare a GPU, two do not."""
    def worker(**resources):
        return {"cls": Worker, "options": {"nthreads": 1, "resources": resources}}

    workers = {"cpu-0": worker(), "gpu-0": worker(GPU=1), "cpu-1": worker(), "gpu-1": worker(GPU=1)}
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
    with SpecCluster(workers=workers, scheduler=scheduler) as cluster, Client(cluster) as client:
        yield client


def test_trainers_live_on_the_workers_declaring_gpus_and_train_on_the_data_sent_to_them(stand_in_cluster, planted_run):
    client = stand_in_cluster
    problem = load_problem(planted_run)
    logged = []
    placement, resource = place_modalities(problem.sizes, cluster_workers(client), logged.append)
    names = {address: info["name"] for address, info in cluster_workers(client).items()}
    assert resource == "GPU"
    assert {names[address] for address in placement.values()} == {"gpu-0", "gpu-1"}
    assert len(logged) == 2 and "'tag' share" in logged[1], "the smallest modality is the one co-located"
    trainers = DaskTrainers(client, planted_run, problem, SMALL, placement, fit_validation=False, resource=resource)
    try:
        hosts = client.who_has([*trainers.futures.values(), *trainers.shares.values()])
        for modality, address in placement.items():
            assert address in hosts[trainers.futures[modality].key], modality
            assert address in hosts[trainers.shares[modality].key], modality
        start = trainers.start()
        after = trainers.round(start)
    finally:
        trainers.close()
    for modality in problem.modalities:
        assert after[modality].factor.shape == start[modality].factor.shape
        assert not np.array_equal(after[modality].factor, start[modality].factor), f"{modality} did not train"


def test_a_trainers_share_holds_only_the_relations_spanning_its_modality_and_the_splits_asked_for(planted_run):
    share = planted_run.read_trainer_share("tag", ("train",))
    assert [r.meta.name for r in share.relations] == ["tagging"]
    assert list(share.relations[0].splits) == ["train"]
    assert share.sizes == planted_run.entity_counts()
    refit = planted_run.read_trainer_share("user", ("train", "validation"))
    assert [r.meta.name for r in refit.relations] == planted_run.relation_names()
    assert all(list(r.splits) == ["train", "validation"] for r in refit.relations)
    assert refit.laplacian is not None and refit.laplacian.shape == (share.sizes["user"],) * 2
    assert refit.nbytes > share.nbytes > 0


def test_each_trainer_is_sent_only_the_states_of_the_modalities_it_shares_a_relation_with():
    from hyperlearn.coordinator import states_needed
    from hyperlearn.problem import Problem, Relation
    from hyperlearn.rundir import RelationMeta

    def relation(name, *modalities):
        return Relation(RelationMeta(name, modalities, (3,) * len(modalities), "squared"), {})

    chain = Problem(
        sizes={"a": 3, "b": 3, "c": 3, "lonely": 3},
        relations=(relation("ab", "a", "b"), relation("bc", "b", "c")),
        laplacians={},
    )
    assert states_needed(chain) == {"a": ("a", "b"), "b": ("a", "b", "c"), "c": ("b", "c"), "lonely": ("lonely",)}
    # without a proximal term a trainer never reads its own last state, so it is not sent back to it
    assert states_needed(chain, own=False) == {"a": ("b",), "b": ("a", "c"), "c": ("b",), "lonely": ()}
