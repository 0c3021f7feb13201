"""`hyperlearn run --scheduler` on an existing Dask cluster: a real scheduler and workers started with the `dask`
command, each worker in its own working directory and unable to read any run directory."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client

from hyperlearn.flows.cli import main
from hyperlearn.workers import cluster_workers
from tests.flows.test_hyperlearn_flow import SMALL_TRAINING

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

DASK = [sys.executable, "-m", "dask"]  # the `dask` command, run by this interpreter
PRELOAD = str(Path(__file__).with_name("worker_without_run_dir.py"))
N_WORKERS = 3  # one per modality of the demo spec


@pytest.fixture(scope="module")
def external_scheduler_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A loopback scheduler and N_WORKERS single-threaded workers (`dask scheduler`, `dask worker`), all up; the
    scheduler file the scheduler wrote."""
    home = tmp_path_factory.mktemp("cluster")
    scheduler_file = home / "scheduler.json"
    processes = [
        subprocess.Popen(
            [*DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(scheduler_file)],
            cwd=home,
        )
    ]
    try:
        for i in range(N_WORKERS):
            workdir = home / f"worker-{i}"
            workdir.mkdir()
            processes.append(
                subprocess.Popen(
                    [*DASK, "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1", "--no-nanny",
                     "--no-dashboard", "--name", f"w{i}", "--preload", PRELOAD, "--local-directory", str(workdir)],
                    cwd=workdir,
                )
            )
        deadline = time.monotonic() + 120
        while not scheduler_file.exists():
            assert time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.2)
        with Client(scheduler_file=str(scheduler_file)) as client:
            client.wait_for_workers(N_WORKERS, timeout=120)
            yield scheduler_file
    finally:
        _stop(processes[1:])  # the workers first, while the scheduler still answers their goodbye
        _stop(processes[:1])


def _stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM, then SIGKILL what has not exited 10 s later."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def external_cluster(external_scheduler_file: Path) -> str:
    """The address of the scheduler of the `external_scheduler_file` cluster."""
    return json.loads(external_scheduler_file.read_text())["address"]


def _run(spec: Path, out: Path, *options: str) -> dict:
    overrides = [f"--{name.replace('_', '-')}={value}" for name, value in SMALL_TRAINING.items()]
    assert main(["run", str(spec), "--out", str(out), *options, *overrides]) == 0
    dataset = out / "demo"
    return json.loads((dataset / (dataset / "latest").readlink() / "metrics.json").read_text())


def test_a_run_on_an_existing_cluster_trains_there_publishes_and_leaves_the_cluster_up(
    prefect_server, external_cluster, small_demo_spec, tmp_path, caplog
):
    caplog.set_level(logging.INFO)
    external = _run(small_demo_spec, tmp_path / "external", "--scheduler", external_cluster)
    lines = list(caplog.messages)
    caplog.clear()
    assert any(f"using the existing Dask cluster at {external_cluster} (--scheduler): 3 worker(s)" in line
               for line in lines)
    assert not any("started a cpu cluster" in line for line in lines)
    assert any("ingest: the sources were read and validated on the cluster's 3 worker(s)" in line for line in lines)
    hosts = [line.split(" on ")[-1] for line in lines if "[distributed] trainer for" in line]
    with Client(external_cluster) as client:
        workers = cluster_workers(client)
        assert len(workers) == N_WORKERS, "the cluster is still up, every worker with it"
        assert sorted(hosts) == sorted(workers), "one trainer on each worker"
        assert not client.who_has(), "the run released everything it put on the cluster"
    local = _run(small_demo_spec, tmp_path / "local")
    assert any("started a cpu cluster" in line for line in caplog.messages)
    for name, value in local["metrics"].items():
        if name.startswith(("test", "validation")) and value is not None:
            assert external["metrics"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
