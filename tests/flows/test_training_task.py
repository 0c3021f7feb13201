from concurrent.futures import Future

import numpy as np
import pytest
from distributed import LocalCluster
from distributed.comm.core import CommClosedError
from prefect import flow

from hyperlearn.config import MemoryBudgetError, TrainingConfig
from hyperlearn.coordinator import TrainerLost
from hyperlearn.flows.hyperlearn_flow import TRAIN_RETRIES
from hyperlearn.flows.training import is_transient, train
from hyperlearn.rundir import Entries, RelationMeta, RunDir
from tests.hyperlearn.planted import write_planted_run


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


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (TrainerLost("the worker tcp://127.0.0.1:1 training modality 'tag' left the cluster"), True),
        (TimeoutError("Nanny failed to start in 60 seconds"), True),
        (CommClosedError("in <TCP (closed)>: Stream is closed"), True),
        (MemoryBudgetError("rank 100000 needs at least 80 GB"), False),
        (ValueError("ratings.csv, row 3, field 'rating': not a number"), False),
        (OSError(28, "No space left on device"), False),
        (None, False),
    ],
)
def test_only_failures_of_the_machinery_are_transient(error, transient):
    assert is_transient(error) is transient


@pytest.mark.prefect
@pytest.mark.parametrize(("error", "attempts"), [(TrainerLost("worker left"), 1 + TRAIN_RETRIES),
                                                  (ValueError("bad data"), 1)])
def test_the_train_task_retries_transient_failures_only(prefect_server, monkeypatch, tmp_path, error, attempts):
    import hyperlearn.flows.hyperlearn_flow as hyperlearn_flow

    calls: list[int] = []

    def failing_train(*args, **kwargs):
        calls.append(1)
        raise error

    monkeypatch.setattr(hyperlearn_flow, "train", failing_train)
    train_now = hyperlearn_flow.train_step.with_options(retry_delay_seconds=0)

    @flow
    def one_training() -> None:
        train_now(None, RunDir(tmp_path), "v1", TrainingConfig(), "joint", None, None)

    with pytest.raises(type(error)):
        one_training()
    assert len(calls) == attempts


@pytest.mark.slow
def test_a_cluster_that_did_not_start_in_time_is_started_again_for_training(tmp_path, monkeypatch):
    import hyperlearn.flows.training as training

    run = write_planted_run(tmp_path, n_users=40, n_items=30, n_tags=5, n_ratings=400)
    started: list[LocalCluster] = []
    asked: list[tuple[int, str]] = []

    def slow_then_threaded_cluster(n_workers, device, dashboard, rmm_pool_size, log):
        asked.append((n_workers, device))
        if len(asked) == 1:
            raise TimeoutError("Nanny failed to start in 60 seconds")
        started.append(LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=False, dashboard_address=":0"))
        return started[-1]

    monkeypatch.setattr(training, "make_cluster", slow_then_threaded_cluster)
    logged: list[str] = []
    config = TrainingConfig(rank=2, rounds=1, local_steps=1, conv_width=4, lstm_width=4, device="cpu")
    with training.training_cluster(3, config, "distributed", log=logged.append) as cluster:
        result, device = train(run, config, mode="distributed", cluster=cluster, log=logged.append)
    assert device == "cpu"
    assert result.mode == "distributed" and set(result.states) == {"user", "item", "tag"}
    assert logged[0] == "the training cluster did not start (Nanny failed to start in 60 seconds); starting another"
    assert asked == [(3, "cpu"), (3, "cpu")]  # one worker per modality, twice
    [cluster] = started
    assert cluster.status.name == "closed"


@pytest.mark.parametrize(
    ("device", "gpus", "cupy", "expected"),
    [
        ("auto", 1, True, "cuda"),
        ("cuda", 1, True, "cuda"),
        ("cpu", 1, True, "cpu"),  # --device cpu on a GPU host: graphs on the CPU too
        ("cuda", 0, True, "cpu"),  # a CPU-only driver of a GPU cluster
        ("auto", 1, False, "cpu"),  # a GPU without the gpu extra
    ],
)
def test_graphs_are_built_on_the_gpu_only_where_this_process_can(monkeypatch, device, gpus, cupy, expected):
    from hyperlearn.flows import training

    monkeypatch.setattr(training, "visible_gpu_count", lambda: gpus)
    monkeypatch.setattr(training, "cupy_installed", lambda: cupy)
    monkeypatch.setattr(training, "run_device", lambda config: "cuda" if config.device in ("auto", "cuda") else "cpu")
    assert training.graph_device(TrainingConfig(device=device)) == expected
