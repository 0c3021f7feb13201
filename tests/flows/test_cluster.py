"""The cluster factory: CPU placement on real process workers, GPU placement through a stand-in worker."""

from __future__ import annotations

import sys

import pytest
from distributed import Client, LocalCluster

from hyperlearn.flows import cluster as cluster_module
from hyperlearn.flows.cluster import make_cluster


def _worker_state() -> dict:
    """Runs on a worker: the thread counts it was given and whether Prefect was imported there."""
    import os

    import torch

    return {
        "omp": os.environ.get("OMP_NUM_THREADS"),
        "malloc_trim": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
        "torch_threads": torch.get_num_threads(),
        "prefect_imported": "prefect" in sys.modules,
        "trainer_imported": "hyperlearn.trainer" in sys.modules,
    }


@pytest.mark.slow
def test_cpu_cluster_has_one_process_worker_per_trainer_with_matching_threads(monkeypatch):
    monkeypatch.setattr(cluster_module, "visible_gpu_count", lambda: 0)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with make_cluster(2, "cpu", threads_per_worker=2) as cluster, Client(cluster) as client:
        workers = client.scheduler_info()["workers"]
        assert len(workers) == 2
        assert all(info["nthreads"] == 2 for info in workers.values())
        assert cluster.scheduler.http_server.port != 8787
        states = client.run(_worker_state)
    assert len(states) == 2
    for state in states.values():
        # no malloc trim threshold: it would turn off glibc's adaptive mmap threshold (see worker_environ)
        assert state == {
            "omp": "2", "malloc_trim": None, "torch_threads": 2, "prefect_imported": False, "trainer_imported": True,
        }


def test_default_threads_split_the_cores(monkeypatch):
    monkeypatch.setattr(cluster_module, "visible_gpu_count", lambda: 0)
    monkeypatch.setattr(cluster_module, "CPU_COUNT", 8)
    monkeypatch.setattr(cluster_module, "LocalCluster", _ThreadedCluster)
    with make_cluster(3, "cpu") as cluster:
        assert cluster.kwargs["threads_per_worker"] == 2
        assert cluster.kwargs["n_workers"] == 3
        assert cluster.kwargs["dashboard_address"] is None
        assert cluster.kwargs["env"]["OMP_NUM_THREADS"] == "2"
    with make_cluster(16, "cpu") as cluster:
        assert cluster.kwargs["threads_per_worker"] == 1


class _ThreadedCluster(LocalCluster):
    """Stand-in for LocalCluster: records its arguments, runs its workers as threads."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        super().__init__(
            n_workers=kwargs["n_workers"],
            threads_per_worker=kwargs["threads_per_worker"],
            processes=False,
            dashboard_address=None,
        )


class _StandInCUDACluster(LocalCluster):
    """Stand-in for dask-cuda's LocalCUDACluster (as dask-cuda tests its multi-GPU logic without GPUs):
    one threaded worker per listed device, named after it, with the arguments recorded."""

    def __init__(
        self, CUDA_VISIBLE_DEVICES, n_workers, threads_per_worker, dashboard_address, env, scheduler_kwargs, preload
    ):
        self.devices = list(CUDA_VISIBLE_DEVICES)
        self.threads_per_worker = threads_per_worker
        self.env = env
        assert n_workers == len(self.devices) and preload == ["hyperlearn.trainer"]
        super().__init__(
            n_workers=0,
            threads_per_worker=threads_per_worker,
            processes=False,
            dashboard_address=dashboard_address,
            scheduler_kwargs=scheduler_kwargs,
        )
        for device in self.devices:
            self.worker_spec[device] = dict(self.new_spec)
        self.sync(self._correct_state)


@pytest.mark.parametrize(
    ("gpus", "trainers", "expected_devices", "warns"),
    [(4, 3, [0, 1, 2], False), (2, 3, [0, 1], True), (1, 1, [0], False)],
)
def test_gpu_cluster_has_one_worker_per_gpu(monkeypatch, gpus, trainers, expected_devices, warns):
    monkeypatch.setattr(cluster_module, "visible_gpu_count", lambda: gpus)
    monkeypatch.setattr(cluster_module, "cuda_cluster_type", lambda: _StandInCUDACluster)
    messages: list[str] = []
    with make_cluster(trainers, "cuda", threads_per_worker=1, log=messages.append) as cluster, Client(cluster) as client:
        assert cluster.devices == expected_devices
        assert cluster.env["OMP_NUM_THREADS"] == "1"
        assert sorted(client.scheduler_info()["workers"][w]["name"] for w in client.scheduler_info()["workers"]) == (
            expected_devices
        )
    assert any("GPU" in message and "more than one trainer" in message for message in messages) == warns


def test_rejects_an_empty_cluster_and_an_unresolved_device():
    with pytest.raises(ValueError, match="n_workers"):
        make_cluster(0, "cpu")
    with pytest.raises(ValueError, match="resolved"):
        make_cluster(1, "auto")


def test_a_cpu_device_gets_a_cpu_cluster_even_where_gpus_are_visible(monkeypatch):
    """`--device cpu` on a GPU host: the cluster follows the setting, not the hardware."""
    monkeypatch.setattr(cluster_module, "visible_gpu_count", lambda: 4)
    monkeypatch.setattr(cluster_module, "LocalCluster", _ThreadedCluster)
    monkeypatch.setattr(cluster_module, "cuda_cluster_type", lambda: _StandInCUDACluster)
    with make_cluster(2, "cpu") as cluster:
        assert isinstance(cluster, _ThreadedCluster) and cluster.kwargs["n_workers"] == 2


def test_cuda_without_a_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(cluster_module, "visible_gpu_count", lambda: 0)
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        make_cluster(1, "cuda")


@pytest.mark.gpu
@pytest.mark.slow
def test_real_cuda_cluster_gives_each_worker_its_own_gpu():
    with make_cluster(1, "cuda") as cluster, Client(cluster) as client:

        def visible() -> tuple[str, int]:
            import os

            import torch

            return os.environ["CUDA_VISIBLE_DEVICES"], torch.cuda.device_count()

        seen = client.run(visible)
    assert len(seen) == 1
    [(devices, count)] = seen.values()
    assert devices.split(",")[0] == "0" and count >= 1
