"""Training a prepared run directory in either mode, as plain functions the flow's train task wraps.

Distributed mode starts a cluster with one worker per modality, trains on it and shuts it down; joint mode
trains every encoder in this process, the yardstick the distributed mode is compared against.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

from distributed import Client
from distributed.deploy import Cluster

from hyperlearn.flows.cluster import make_cluster
from hyperlearn.config import TrainingConfig, check_memory
from hyperlearn.coordinator import train_distributed
from hyperlearn.joint import train_joint
from hyperlearn.model import resolve_device
from hyperlearn.result import TrainResult
from hyperlearn.rundir import RunDir

Mode = Literal["distributed", "joint"]
MODES: tuple[str, ...] = get_args(Mode)


def train(
    run: RunDir,
    config: TrainingConfig,
    *,
    mode: Mode,
    n_modalities: int,
    log: Callable[[str], None] = print,
) -> tuple[TrainResult, str]:
    """Train the run in `run`; return the result and the device it ran on ("cpu" or "cuda"): `config.device`,
    with "auto" resolved here, once, for the cluster and the trainers alike. A rank whose parameters would not
    fit in memory for the run's entity counts raises MemoryBudgetError first."""
    check_memory(run.entity_counts(), config)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    device = resolve_device(config.device).type
    config = config.replace(device=device)
    if mode == "joint":
        return train_joint(run, config, log=log), device
    cluster = make_cluster(n_modalities, device, log=log)
    client = None
    try:
        client = Client(cluster)
        result = train_distributed(client, run, config, log=log)
    finally:
        _close(cluster, client, log)
    return result, device


def _close(cluster: Cluster, client: Client | None, log: Callable[[str], None]) -> None:
    """Shut the client and cluster down; a teardown that fails (a worker that will not stop in time) is logged,
    never raised: it must not discard a finished training, nor hide the error that ended an unfinished one."""
    for closable in (client, cluster):
        if closable is None:
            continue
        try:
            closable.close()
        except Exception as error:  # noqa: BLE001 - whatever teardown raises, the run's outcome stands
            log(f"closing the Dask {type(closable).__name__} failed, ignored: {type(error).__name__}: {error}")

