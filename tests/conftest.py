"""Shared test set-up: an isolated, offline Prefect; a shared in-process Dask client; the `gpu` marker.

The environment is fixed here, before any test module imports Prefect or torch, because both read it once at
import: Prefect its settings (home, API address, telemetry), torch its thread count.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from distributed import Client

_PREFECT_HOME = tempfile.mkdtemp(prefix="hyperlearn-test-prefect-")
atexit.register(shutil.rmtree, _PREFECT_HOME, ignore_errors=True)
os.environ.pop("PREFECT_API_URL", None)
os.environ.update(
    {
        "PREFECT_HOME": _PREFECT_HOME,
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "OMP_NUM_THREADS": "1",
    }
)


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """A temporary Prefect server for the whole session; its API address is exported for Dask workers."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        url = PREFECT_API_URL.value()
        os.environ["PREFECT_API_URL"] = url
        try:
            yield url
        finally:
            os.environ.pop("PREFECT_API_URL", None)


@pytest.fixture(scope="session")
def dask_client() -> Iterator[Client]:
    """A threaded two-worker Dask cluster shared by the session (starts in milliseconds)."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        yield client


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked `gpu` where no CUDA device is visible. (By marker, not keyword: a checkout in a folder
    named `gpu` gives every test that keyword.)"""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_tests:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in gpu_tests:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def small_demo_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic demo dataset (3 modalities, ratings and taggings) and its spec, for end-to-end runs."""
    from hyperlearn.pipeline.sources.synthetic import generate_demo

    return generate_demo(
        tmp_path_factory.mktemp("demo-data"),
        n_users=120,
        n_items=80,
        n_tags=15,
        rank=3,
        n_clusters=3,
        n_ratings=2_000,
        n_rerated=20,
        n_taggings=600,
    )
