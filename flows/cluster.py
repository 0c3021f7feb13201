"""The cluster factory: the one place that knows which kind of Dask cluster training runs on.

HyperLearn trains one model per modality, each pinned to its own Dask worker (docs/method.md §3). For the device the
run's settings resolved (`training.device`, "auto" made concrete once by `hyperlearn.model.resolve_device`):
"cuda" is dask-cuda's `LocalCUDACluster`, one worker per GPU, each seeing its GPU as `cuda:0`; "cpu" is
distributed's `LocalCluster` with one process worker per modality and the machine's cores split between them.

Worker processes inherit this process's environment, so a `PREFECT_API_URL` set here reaches them; they never
import Prefect themselves (only `hyperlearn` code runs on them), so none of them starts a Prefect server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

import dask
import torch
from dask.system import CPU_COUNT
from distributed import LocalCluster
from distributed.deploy import Cluster

_logger = logging.getLogger(__name__)

#: What the workers run: imported by each worker as it starts.
TRAINER_MODULE = "hyperlearn.trainer"

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
    return torch.cuda.device_count()


def make_cluster(
    n_workers: int,
    device: Literal["cpu", "cuda"],
    *,
    threads_per_worker: int | None = None,
    log: Callable[[str], None] = _logger.info,
) -> Cluster:
    """Start a local cluster for `n_workers` per-modality trainers on `device`.

    "cuda": one worker per visible GPU, using at most `n_workers` GPUs; with fewer GPUs than trainers some workers
    host several trainers, and `log` says so. "cpu": `n_workers` process workers. Either way each worker gets
    `threads_per_worker` threads (default: the cores split evenly, at least one), and its OpenMP/BLAS/torch
    thread pools are sized to match, and it imports the trainer as it starts. Dashboards are off. The caller
    closes the cluster.
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
        # No dashboard, and the scheduler's small HTTP endpoint (health, metrics) on a free local port rather
        # than 8787, so that clusters started side by side never collide or warn.
        "dashboard_address": None,
        "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"},
        # Each worker imports the trainer (torch and all) as it starts, not when its first actor arrives: a
        # cluster started while the run ingests is then ready to train when ingest is done.
        "preload": [TRAINER_MODULE],
    }
    with dask.config.set({"distributed.nanny.pre-spawn-environ": worker_environ()}):
        if device == "cuda":
            if gpus < n_workers:
                log(f"{n_workers} trainers on {gpus} GPU(s): some GPU workers host more than one trainer")
            cluster: Cluster = cuda_cluster_type()(
                CUDA_VISIBLE_DEVICES=list(range(workers)), n_workers=workers, threads_per_worker=threads, **options
            )
        else:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True, **options)
    log(f"started a {device} cluster: {workers} worker(s) x {threads} thread(s)")
    return cluster
