"""The cluster factory: CPU placement on real process workers, GPU placement through a stand-in worker."""

from __future__ import annotations

import sys

import pytest
from distributed import Client, LocalCluster

from hyperlearn.flows import cluster as cluster_module
from hyperlearn.flows.cluster import ClusterChoice, choose_cluster, make_cluster
from hyperlearn.workers import cluster_workers


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
        workers = cluster_workers(client)
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
    one threaded worker per listed device, named after it, with the arguments recorded, and the
    CUDA_VISIBLE_DEVICES each worker would get (dask-cuda's own rotation of the list)."""

    def __init__(
        self,
        CUDA_VISIBLE_DEVICES,
        n_workers,
        threads_per_worker,
        dashboard_address,
        env,
        scheduler_kwargs,
        preload,
        **rmm,
    ):
        from dask_cuda.utils import cuda_visible_devices

        self.devices = list(CUDA_VISIBLE_DEVICES)
        self.worker_visible_devices = [cuda_visible_devices(i, self.devices) for i in range(n_workers)]
        self.threads_per_worker = threads_per_worker
        self.env = env
        self.rmm = rmm
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
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(cluster_module, "visible_gpu_count", lambda: gpus)
    monkeypatch.setattr(cluster_module, "cuda_cluster_type", lambda: _StandInCUDACluster)
    messages: list[str] = []
    with make_cluster(trainers, "cuda", threads_per_worker=1, log=messages.append) as cluster, Client(cluster) as client:
        assert cluster.devices == expected_devices
        assert cluster.env["OMP_NUM_THREADS"] == "1"
        assert sorted(info["name"] for info in cluster_workers(client).values()) == expected_devices
    assert any("GPU" in message and "more than one trainer" in message for message in messages) == warns


@pytest.mark.parametrize(
    ("visible", "gpus", "trainers", "expected_devices", "expected_environments"),
    [
        ("5,2,7", 3, 2, [5, 2], ["5,2", "2,5"]),  # the user's GPUs, in the user's order, as many as trainers
        ("GPU-1a2b,GPU-3c4d", 2, 3, ["GPU-1a2b", "GPU-3c4d"], ["GPU-1a2b,GPU-3c4d", "GPU-3c4d,GPU-1a2b"]),
        (" 3 ", 1, 1, [3], ["3"]),
    ],
)
def test_the_users_cuda_visible_devices_are_the_gpus_the_cluster_uses(
    monkeypatch, visible, gpus, trainers, expected_devices, expected_environments
):
    """LocalCUDACluster(CUDA_VISIBLE_DEVICES=…) is told the user's devices, not 0, 1, …: each worker then sees
    its own GPU of the user's first (dask-cuda rotates the list per worker)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    monkeypatch.setattr(cluster_module, "visible_gpu_count", lambda: gpus)
    monkeypatch.setattr(cluster_module, "cuda_cluster_type", lambda: _StandInCUDACluster)
    with make_cluster(trainers, "cuda", threads_per_worker=1) as cluster:
        assert cluster.devices == expected_devices
        assert cluster.worker_visible_devices == expected_environments


def test_an_rmm_pool_is_asked_of_dask_cuda_and_torch_allocates_from_it(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(cluster_module, "visible_gpu_count", lambda: 2)
    monkeypatch.setattr(cluster_module, "cuda_cluster_type", lambda: _StandInCUDACluster)
    with make_cluster(2, "cuda", threads_per_worker=1, rmm_pool_size=0.8) as cluster:
        assert cluster.rmm == {"rmm_pool_size": 0.8, "rmm_allocator_external_lib_list": ["torch"]}
    with make_cluster(2, "cuda", threads_per_worker=1) as cluster:
        assert cluster.rmm == {}, "without a pool size, dask-cuda's defaults and torch's own allocator"


def test_an_rmm_pool_size_on_a_cpu_cluster_is_ignored_and_said_so(monkeypatch):
    monkeypatch.setattr(cluster_module, "visible_gpu_count", lambda: 0)
    monkeypatch.setattr(cluster_module, "LocalCluster", _ThreadedCluster)
    messages: list[str] = []
    with make_cluster(1, "cpu", rmm_pool_size=2**30, log=messages.append) as cluster:
        assert not any(name.startswith("rmm") for name in cluster.kwargs)
    assert "the RMM pool size is ignored: this run's cluster has CPU workers" in messages


def test_the_rmm_pool_size_is_parsed_for_the_local_cluster_only(tmp_path):
    import dask

    with dask.config.set({"scheduler-address": None}):
        assert choose_cluster(rmm_pool_size="24GB") == ClusterChoice(rmm_pool_size=24_000_000_000)
        assert choose_cluster(rmm_pool_size="16GiB").rmm_pool_size == 16 * 2**30
        assert choose_cluster(rmm_pool_size="0.8").rmm_pool_size == 0.8
        assert choose_cluster().rmm_pool_size is None
        for bad, message in [("1.5", r"in \(0, 1\]"), ("lots", "give bytes"), ("0", "must be positive")]:
            with pytest.raises(ValueError, match=message):
                choose_cluster(rmm_pool_size=bad)
    with pytest.raises(ValueError, match="dask cuda worker --rmm-pool-size"):
        choose_cluster("tcp://a:1", rmm_pool_size="24GB")
    with dask.config.set({"scheduler-address": "tcp://configured:8786"}), pytest.raises(
        ValueError, match="DASK_SCHEDULER_ADDRESS names an existing one"
    ):
        choose_cluster(rmm_pool_size="24GB")
    with pytest.raises(ValueError, match="not joint mode"):
        choose_cluster(rmm_pool_size="24GB", distributed=False)


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


@pytest.mark.gpu
@pytest.mark.slow
def test_a_real_cuda_cluster_honours_cuda_visible_devices_and_gives_torch_an_rmm_pool(monkeypatch):
    """The last GPU named by CUDA_VISIBLE_DEVICES (the only one, on a one-GPU host) hosts the worker, whose torch
    allocates from an RMM pool."""
    pytest.importorskip("rmm")
    import torch

    last = torch.cuda.device_count() - 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", str(last))
    monkeypatch.setattr(cluster_module, "visible_gpu_count", lambda: 1)
    with make_cluster(1, "cuda", rmm_pool_size=2**28) as cluster, Client(cluster) as client:

        def allocator() -> tuple[str, int, str, str]:
            import os

            import rmm
            import torch

            on_gpu = torch.ones(1024, device="cuda")
            return (
                os.environ["CUDA_VISIBLE_DEVICES"],
                torch.cuda.device_count(),
                type(rmm.mr.get_current_device_resource()).__name__,
                torch.cuda.memory.get_allocator_backend() + f":{on_gpu.sum().item():.0f}",
            )

        [(devices, count, resource, backend)] = client.run(allocator).values()
    assert devices == str(last) and count == 1
    assert resource == "PoolMemoryResource"
    assert backend == "pluggable:1024", "torch allocates through RMM's allocator"


def test_the_dashboard_is_off_unless_asked_for_and_then_on_loopback(monkeypatch):
    monkeypatch.setattr(cluster_module, "visible_gpu_count", lambda: 0)
    monkeypatch.setattr(cluster_module, "LocalCluster", _ThreadedCluster)
    messages: list[str] = []
    with make_cluster(1, "cpu", dashboard=True, log=messages.append) as cluster:
        assert cluster.kwargs["dashboard_address"] == "127.0.0.1:8787"
        assert cluster.kwargs["scheduler_kwargs"] == {}
    assert messages[-1].startswith("the Dask dashboard is at http://")
    with make_cluster(1, "cpu") as cluster:
        assert cluster.kwargs["dashboard_address"] is None


def test_an_address_wins_over_a_scheduler_file_over_dask_scheduler_address_over_a_local_cluster(tmp_path):
    import dask

    scheduler_file = tmp_path / "scheduler.json"
    scheduler_file.write_text("{}")
    with dask.config.set({"scheduler-address": "tcp://configured:8786"}):
        assert choose_cluster("tcp://given:8786") == ClusterChoice(address="tcp://given:8786", source="--scheduler")
        assert choose_cluster(scheduler_file=str(scheduler_file)) == ClusterChoice(
            scheduler_file=str(scheduler_file), source="--scheduler-file"
        )
        configured = choose_cluster()
        assert configured.address == "tcp://configured:8786" and configured.source == "DASK_SCHEDULER_ADDRESS"
        assert configured.existing
        assert choose_cluster(distributed=False) == ClusterChoice(), "joint mode ignores DASK_SCHEDULER_ADDRESS"
    with dask.config.set({"scheduler-address": None}):
        local = choose_cluster(dashboard=True)
    assert local == ClusterChoice(dashboard=True) and not local.existing


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scheduler": "tcp://a:1", "scheduler_file": "f.json"}, "not both"),
        ({"scheduler": "tcp://a:1", "dashboard": True}, "an existing cluster serves its own"),
        ({"scheduler_file": "/nonexistent/scheduler.json"}, "/nonexistent/scheduler.json does not exist"),
        ({"scheduler": "tcp://a:1", "distributed": False}, "for distributed mode, not joint mode"),
    ],
)
def test_contradictory_or_missing_cluster_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        choose_cluster(**options)


def test_choosing_a_cluster_imports_no_torch():
    """`hyperlearn ingest` chooses (and connects to) a cluster through this module; torch is for the trainers."""
    import subprocess

    probe = "import sys, hyperlearn.flows.cluster; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "False\n"


@pytest.mark.slow
def test_dask_scheduler_address_in_the_environment_is_honoured(tmp_path):
    import os
    import subprocess

    probe = "from hyperlearn.flows.cluster import choose_cluster; print(choose_cluster().address)"
    environment = {**os.environ, "DASK_SCHEDULER_ADDRESS": "tcp://10.0.0.7:8786"}
    found = subprocess.run([sys.executable, "-c", probe], env=environment, capture_output=True, text=True, check=True)
    assert found.stdout == "tcp://10.0.0.7:8786\n"


def test_an_existing_cluster_that_does_not_answer_is_named():
    message = r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:9 \(--scheduler\)"
    with pytest.raises(ConnectionError, match=message):
        ClusterChoice(address="tcp://127.0.0.1:9", source="--scheduler").connect(timeout=1)


def test_workers_with_the_nannys_malloc_trim_threshold_are_warned_about(dask_client, monkeypatch):
    from hyperlearn.flows.cluster import trim_threshold_warning

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    assert trim_threshold_warning(dask_client) is None
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # the threaded workers share this process's environment
    assert "2 worker(s) run with MALLOC_TRIM_THRESHOLD_ set" in trim_threshold_warning(dask_client)
