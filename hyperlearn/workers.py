"""The workers of a Dask cluster as its scheduler knows them now.

`Client.scheduler_info()["workers"]` is not safe for this: the client keeps one cached identity of the
scheduler, which a periodic callback on the client's event loop refreshes without any per-worker details, and
`scheduler_info()` returns that shared cache after its own refresh — so a caller on another thread can be handed
the callback's copy, with workers missing (distributed 2026.7). A trainer placed on a worker that then seemed
absent failed with a KeyError, and a live worker could be taken for a lost one. This asks the scheduler itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distributed import Client


def cluster_workers(client: Client) -> dict[str, dict[str, Any]]:
    """Every worker of `client`'s cluster by address, with what the scheduler knows of it (nthreads, resources,
    memory_limit, …), fetched from the scheduler now rather than from the client's cache."""
    return dict(client.sync(client.scheduler.identity, n_workers=-1)["workers"])
