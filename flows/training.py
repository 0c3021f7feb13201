"""Training a prepared run directory in either mode, as plain functions the flow's train task wraps.

Distributed mode trains on the run's cluster (`hyperlearn.flows.cluster.choose_cluster`): an existing one, which
it leaves running, or a local one with one worker per modality, started in the background by `training_cluster`
while the run ingests, so that its workers spawn and import the trainer meanwhile; joint mode trains every
encoder in this process, the yardstick the distributed mode is compared against.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, get_args

from distributed import Client
from distributed.deploy import Cluster

from hyperlearn.flows.cluster import (
    ClusterChoice,
    describe_existing,
    make_cluster,
    trim_threshold_warning,
    workers_device,
)
from hyperlearn.config import TrainingConfig, check_memory
from hyperlearn.coordinator import train_distributed
from hyperlearn.joint import train_joint
from hyperlearn.model import resolve_device
from hyperlearn.result import TrainResult
from hyperlearn.rundir import RunDir

Mode = Literal["distributed", "joint"]
MODES: tuple[str, ...] = get_args(Mode)


def run_device(config: TrainingConfig) -> str:
    """The device a run in this process (joint, or on a local cluster) trains on, "cpu" or "cuda":
    `config.device` with "auto" resolved, the one place where the local cluster and the trainers learn it."""
    return resolve_device(config.device).type


@dataclass(frozen=True)
class TrainingCluster:
    """The cluster a distributed run trains on, connected: its client, the device its trainers use, and the
    local cluster this run started (None for an existing cluster, which the run leaves running)."""

    client: Client
    device: str
    started: Cluster | None


@contextmanager
def training_cluster(
    n_modalities: int,
    config: TrainingConfig,
    mode: Mode,
    choice: ClusterChoice = ClusterChoice(),
    log: Callable[[str], None] = print,
) -> Iterator[Future[TrainingCluster] | None]:
    """For distributed mode, the run's cluster (`choice`), connecting (or, for a local one, starting) in the
    background from the beginning of the block; on leaving, the client is closed, and the cluster too if this
    run started it (a teardown that fails is logged, never raised). None for joint mode."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if mode == "joint":
        yield None
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cluster-start") as starter:
        cluster = starter.submit(_connect, n_modalities, config, choice, log)
        try:
            yield cluster
        finally:
            if cluster.exception() is None:
                connected = cluster.result()
                _close(connected.client, log)
                if connected.started is not None:
                    _close(connected.started, log)


def _connect(
    n_modalities: int, config: TrainingConfig, choice: ClusterChoice, log: Callable[[str], None]
) -> TrainingCluster:
    if not choice.existing:
        device = run_device(config)
        started = make_cluster(n_modalities, device, dashboard=choice.dashboard, log=log)  # type: ignore[arg-type]
        try:
            # The default client (as every Client is, unless told otherwise): the trainer actors' handles find it.
            return TrainingCluster(Client(started), device, started)
        except BaseException:
            _close(started, log)
            raise
    client = choice.connect()
    try:
        log(describe_existing(client, choice))
        warning = trim_threshold_warning(client)
        if warning:
            log(f"warning: {warning}")
        return TrainingCluster(client, workers_device(client, config.device), None)
    except BaseException:
        _close(client, log)
        raise


def train(
    run: RunDir,
    config: TrainingConfig,
    *,
    mode: Mode,
    cluster: Future[TrainingCluster] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[TrainResult, str]:
    """Train the run in `run` (distributed: on `cluster`, from `training_cluster`); return the result and the
    device it ran on. A rank whose parameters would not fit in memory for the run's entity counts raises
    MemoryBudgetError first."""
    check_memory(run.entity_counts(), config)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if mode == "joint":
        device = run_device(config)
        return train_joint(run, config.replace(device=device), log=log), device
    if cluster is None:
        raise ValueError("distributed training needs the cluster from training_cluster")
    connected = cluster.result()
    return train_distributed(connected.client, run, config.replace(device=connected.device), log=log), connected.device


def _close(closable: Client | Cluster, log: Callable[[str], None]) -> None:
    """Shut a client or cluster down; a teardown that fails (a worker that will not stop in time) is logged,
    never raised: it must not discard a finished training, nor hide the error that ended an unfinished one."""
    try:
        closable.close()
    except Exception as error:  # noqa: BLE001 - whatever teardown raises, the run's outcome stands
        log(f"closing the Dask {type(closable).__name__} failed, ignored: {type(error).__name__}: {error}")

