"""The cluster factory: the one place that knows which Dask cluster training runs on.

HyperLearn trains one model per modality, each pinned to its own Dask worker (docs/method.md §3). A run either uses
an existing cluster, which it leaves running (`ClusterChoice`: `--scheduler ADDRESS`, `--scheduler-file F`, or
Dask's `scheduler-address` setting, i.e. DASK_SCHEDULER_ADDRESS), or starts a local one for the device the run's
settings resolved (`training.device`, "auto" made concrete once by `hyperlearn.model.resolve_device`):
"cuda" is dask-cuda's `LocalCUDACluster`, one worker per GPU (of those CUDA_VISIBLE_DEVICES names, when set), each
seeing its GPU as `cuda:0`, with an optional RMM memory pool that torch allocates from; "cpu" is
distributed's `LocalCluster` with one process worker per modality and the machine's cores split between them.
On an existing cluster "auto" is resolved by the workers that will host trainers.

Worker processes inherit this process's environment, so a `PREFECT_API_URL` set here reaches them; they never
import Prefect themselves (only `hyperlearn` code runs on them), so none of them starts a Prefect server.

torch and the trainer code are imported by the functions that need them, not with this module: choosing and
connecting to a cluster (`hyperlearn ingest --scheduler`) does not pay their 1.5 s of imports.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import dask
from dask.system import CPU_COUNT
from dask.utils import parse_bytes
from distributed import Client, LocalCluster
from distributed.deploy import Cluster

from hyperlearn.workers import cluster_workers

_logger = logging.getLogger(__name__)

#: What the workers run: imported by each worker as it starts.
TRAINER_MODULE = "hyperlearn.trainer"

#: What each worker imports as it starts: the trainer (torch and all), paid while the run ingests instead of when
#: the trainers start. The trainers' optimiser (hyperlearn.adam) does not import torch._dynamo, which
#: torch.optim's optimisers do when they first step: about 800 modules and 4 s of CPU on these 2-core machines.
WORKER_PRELOAD = (TRAINER_MODULE,)

#: Thread-count variables a numerical library reads once, at import: set before the worker process starts.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def worker_environ() -> dict[str, object]:
    """Distributed's pre-spawn environment for worker processes, less MALLOC_TRIM_THRESHOLD_.

    Setting that variable at all turns off glibc's adaptive mmap threshold, so every large temporary torch
    allocates is a fresh mmap that page-faults in again: measured on MovieLens at rank 500, a trainer's local
    steps took 6.3 s in a worker against 2.2 s without the variable (and 1.9 s in the parent process).
    """
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    return environ


def cuda_cluster_type() -> type[Cluster]:
    """dask-cuda's LocalCUDACluster, imported on first use: its CUDA bindings take seconds to load, which a CPU
    run should not pay."""
    from dask_cuda import LocalCUDACluster

    return LocalCUDACluster


def visible_gpu_count() -> int:
    """Number of CUDA devices this process can see (0 on a CPU-only machine or a CPU build of torch)."""
    import torch

    return torch.cuda.device_count()


def visible_gpus() -> list[int | str]:
    """The GPUs this process can see, named as CUDA_VISIBLE_DEVICES names them (indices, or `GPU-…`/`MIG-…`
    UUIDs), in its order; 0, 1, … when it is unset. Their number is `visible_gpu_count`'s (CUDA itself stops at
    the first entry that names no device)."""
    count = visible_gpu_count()
    named = os.environ.get("CUDA_VISIBLE_DEVICES")
    if named is None:
        return list(range(count))
    entries = [entry.strip() for entry in named.split(",") if entry.strip()]
    return [int(entry) if entry.isdigit() else entry for entry in entries][:count]


def parse_pool_size(size: str) -> int | float:
    """An RMM pool size as `dask cuda worker --rmm-pool-size` takes it: bytes ("24GB", "16GiB", "2000000000") or a
    fraction of each GPU's memory ("0.8"). ValueError naming the value when it is neither, or not positive."""
    text = size.strip()
    try:
        if "." in text and text.replace(".", "", 1).isdigit():
            fraction = float(text)
            if not 0 < fraction <= 1:
                raise ValueError("a fraction of the GPU's memory must be in (0, 1]")
            return fraction
        pool = parse_bytes(text)
    except ValueError as error:
        raise ValueError(f"RMM pool size {size!r}: give bytes (24GB, 16GiB) or a fraction of GPU memory (0.8): "
                         f"{error}") from error
    if pool <= 0:
        raise ValueError(f"RMM pool size {size!r} must be positive")
    return pool


#: Where the local cluster's dashboard listens when asked for: loopback only (Dask moves to a free port if taken).
DASHBOARD_ADDRESS = "127.0.0.1:8787"


def make_cluster(
    n_workers: int,
    device: Literal["cpu", "cuda"],
    *,
    threads_per_worker: int | None = None,
    dashboard: bool = False,
    rmm_pool_size: int | float | None = None,
    log: Callable[[str], None] = _logger.info,
) -> Cluster:
    """Start a local cluster for `n_workers` per-modality trainers on `device`.

    "cuda": one worker per visible GPU, using at most `n_workers` GPUs, the first ones of the user's
    CUDA_VISIBLE_DEVICES when set (`visible_gpus`); with fewer GPUs than trainers some workers host several
    trainers, and `log` says so. With `rmm_pool_size` (bytes, or a fraction of each GPU's memory) each GPU worker
    starts an RMM pool of that size and torch allocates from it (dask-cuda's `rmm_allocator_external_lib_list`);
    without, torch keeps its own caching allocator. "cpu": `n_workers` process workers (a pool size is ignored,
    and `log` says so). Either way each worker gets
    `threads_per_worker` threads (default: the cores split evenly, at least one), and its OpenMP/BLAS/torch
    thread pools are sized to match, and it imports the trainer as it starts. The scheduler's dashboard is off
    unless `dashboard` (then on loopback, its address logged); workers have none. The caller closes the cluster.
    """
    if n_workers < 1:
        raise ValueError(f"n_workers must be >= 1, got {n_workers}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda' (resolved), got {device!r}")
    gpus = visible_gpu_count() if device == "cuda" else 0
    if device == "cuda" and not gpus:
        raise RuntimeError("device 'cuda' was asked for, but no CUDA GPU is visible")
    workers = min(gpus, n_workers) if gpus else n_workers
    threads = threads_per_worker or max(1, CPU_COUNT // workers)
    options = {
        # The nanny's `env` wins over the variables this process has set itself; the workers apply it before
        # they import numpy or torch, which read it once.
        "env": {name: str(threads) for name in _THREAD_VARIABLES},
        # Without a dashboard, the scheduler's small HTTP endpoint (health, metrics) on a free local port rather
        # than 8787, so that clusters started side by side never collide or warn.
        "dashboard_address": DASHBOARD_ADDRESS if dashboard else None,
        "scheduler_kwargs": {} if dashboard else {"dashboard_address": "127.0.0.1:0"},
        # Each worker imports the trainer (torch and all) as it starts, not when its first actor arrives: a
        # cluster started while the run ingests is then ready to train when ingest is done.
        "preload": list(WORKER_PRELOAD),
    }
    with dask.config.set({"distributed.nanny.pre-spawn-environ": worker_environ()}):
        if device == "cuda":
            if gpus < n_workers:
                log(f"{n_workers} trainers on {gpus} GPU(s): some GPU workers host more than one trainer")
            if rmm_pool_size is not None:
                options |= {"rmm_pool_size": rmm_pool_size, "rmm_allocator_external_lib_list": ["torch"]}
            cluster: Cluster = cuda_cluster_type()(
                CUDA_VISIBLE_DEVICES=visible_gpus()[:workers], n_workers=workers, threads_per_worker=threads, **options
            )
        else:
            if rmm_pool_size is not None:
                log("the RMM pool size is ignored: this run's cluster has CPU workers")
            cluster = LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True, **options)
    log(f"started a {device} cluster: {workers} worker(s) x {threads} thread(s)")
    if dashboard:
        log(f"the Dask dashboard is at {cluster.dashboard_link}")
    return cluster


@dataclass(frozen=True)
class ClusterChoice:
    """Which Dask cluster a run trains on: an existing one, reached by scheduler `address` or `scheduler_file`
    and left running, or (neither given) a local one the run starts and stops, with its dashboard when
    `dashboard` and, on GPUs, an RMM pool of `rmm_pool_size` per worker (`make_cluster`). `source` says where
    the choice came from, for the log."""

    address: str | None = None
    scheduler_file: str | None = None
    dashboard: bool = False
    source: str = "local"
    rmm_pool_size: int | float | None = None

    @property
    def existing(self) -> bool:
        return self.address is not None or self.scheduler_file is not None

    def connect(self, timeout: float = 30.0) -> Client:
        """A client of the existing cluster; ConnectionError naming the address when it does not answer."""
        try:
            return Client(self.address, scheduler_file=self.scheduler_file, timeout=timeout)
        except (OSError, TimeoutError) as error:
            where = self.address or f"the scheduler file {self.scheduler_file}"
            raise ConnectionError(f"cannot reach the Dask scheduler at {where} ({self.source}): {error}") from error


def choose_cluster(
    scheduler: str | None = None,
    scheduler_file: str | None = None,
    dashboard: bool = False,
    distributed: bool = True,
    rmm_pool_size: str | None = None,
) -> ClusterChoice:
    """The run's cluster: `scheduler` (an address), else `scheduler_file`, else Dask's `scheduler-address`
    setting (DASK_SCHEDULER_ADDRESS), else a local cluster. The dashboard and RMM pool options (`rmm_pool_size`,
    checked by `parse_pool_size`) are the local cluster's: an existing cluster's workers were started with their
    own (`dask cuda worker --rmm-pool-size`). A run that is not `distributed` (joint mode) uses no cluster: naming
    one is refused, and DASK_SCHEDULER_ADDRESS is ignored."""
    if not distributed:
        if scheduler or scheduler_file or dashboard or rmm_pool_size:
            raise ValueError("--scheduler, --scheduler-file, --dashboard and --rmm-pool-size are for distributed "
                             "mode, not joint mode")
        return ClusterChoice()
    if scheduler and scheduler_file:
        raise ValueError("give the Dask scheduler's address or its scheduler file, not both")
    if dashboard and (scheduler or scheduler_file):
        raise ValueError("--dashboard is for the cluster a run starts; an existing cluster serves its own")
    if rmm_pool_size and (scheduler or scheduler_file):
        raise ValueError("--rmm-pool-size is for the cluster a run starts; start an existing cluster's workers "
                         "with `dask cuda worker --rmm-pool-size SIZE --set-rmm-allocator-for-libs torch`")
    pool = None if not rmm_pool_size else parse_pool_size(rmm_pool_size)
    if scheduler:
        return ClusterChoice(address=scheduler, source="--scheduler")
    if scheduler_file:
        if not os.path.isfile(scheduler_file):
            raise ValueError(f"the Dask scheduler file {scheduler_file} does not exist")
        return ClusterChoice(scheduler_file=scheduler_file, source="--scheduler-file")
    configured = dask.config.get("scheduler-address", None)
    if configured:
        if pool is not None:
            raise ValueError("--rmm-pool-size is for the cluster a run starts, but DASK_SCHEDULER_ADDRESS names an "
                             "existing one; start its workers with `dask cuda worker --rmm-pool-size SIZE`")
        return ClusterChoice(address=configured, source="DASK_SCHEDULER_ADDRESS")
    return ClusterChoice(dashboard=dashboard, rmm_pool_size=pool)


def describe_existing(client: Client, choice: ClusterChoice) -> str:
    """One log line naming the existing cluster a run uses: address, where the choice came from, its workers."""
    workers = cluster_workers(client)
    threads = sum(info["nthreads"] for info in workers.values())
    return (
        f"using the existing Dask cluster at {client.scheduler.address} ({choice.source}): {len(workers)} worker(s), "
        f"{threads} thread(s); it is left running"
    )


def trim_threshold_warning(client: Client) -> str | None:
    """A warning when workers run with MALLOC_TRIM_THRESHOLD_ set (the Dask nanny's default): trainers are then
    about 3x slower (see `worker_environ`); None when no worker has it."""
    settings = client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_")
    slowed = sorted(address for address, value in settings.items() if value is not None)
    if not slowed:
        return None
    return (
        f"{len(slowed)} worker(s) run with MALLOC_TRIM_THRESHOLD_ set (the Dask nanny's default), which makes "
        "trainers about 3x slower; start them with `dask worker --no-nanny` (the nanny always sets it)"
    )


def workers_device(client: Client, device: str) -> Literal["cpu", "cuda"]:
    """The device trainers on this existing cluster use: `device` when concrete; for "auto", "cuda" when every
    worker that may host a trainer (those declaring the trainer resource, if any do) sees a GPU, else "cpu"."""
    from hyperlearn.coordinator import trainer_resource
    from hyperlearn.model import resolve_device

    if device != "auto":
        return resolve_device(device).type  # type: ignore[return-value]
    workers = cluster_workers(client)
    resource = trainer_resource(workers)
    candidates = [a for a, info in workers.items() if resource is None or info.get("resources", {}).get(resource)]
    types = {found.type for found in client.run(resolve_device, "auto", workers=candidates).values()}
    return "cuda" if types == {"cuda"} else "cpu"
