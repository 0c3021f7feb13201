"""cluster_workers lists every worker, also while the client's periodic refresh of its cached scheduler identity
(which carries no per-worker details) runs as often as it can: the race that made Client.scheduler_info() hand
back a worker list with workers missing, about 1 call in 30 at this interval."""

from __future__ import annotations

import dask
from distributed import Client, LocalCluster

from hyperlearn.workers import cluster_workers


def test_every_worker_with_its_threads_and_resources_on_every_call():
    with (
        dask.config.set({"distributed.client.scheduler-info-interval": "5ms"}),
        LocalCluster(n_workers=3, threads_per_worker=2, processes=False, dashboard_address=":0",
                     resources={"trainer": 1}) as cluster,
        Client(cluster) as client,
    ):
        expected = set(cluster.scheduler.workers)
        for _ in range(300):
            workers = cluster_workers(client)
            assert set(workers) == expected
        assert all(info["nthreads"] == 2 and info["resources"] == {"trainer": 1} for info in workers.values())
