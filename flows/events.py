"""The Prefect events HyperLearn emits and listens for, and the resource each one concerns.

`hyperlearn.dataset.changed` (resource `hyperlearn.dataset.<name>`) asks for a retraining of the dataset: the
deployment `hyperlearn schedule` serves has a trigger on it, the serving process emits it with `--on-change`,
and any other system may emit it too (`prefect event emit`). `hyperlearn.embeddings.published` (same resource,
the version's folder in its payload and as a related resource) follows every published version, for downstream
flows to trigger on.
"""

from __future__ import annotations

from typing import Any

from prefect.events import emit_event

DATASET_CHANGED = "hyperlearn.dataset.changed"
EMBEDDINGS_PUBLISHED = "hyperlearn.embeddings.published"


def dataset_resource_id(dataset: str) -> str:
    """The resource id that names a dataset in HyperLearn's events."""
    return f"hyperlearn.dataset.{dataset}"


def dataset_resource(dataset: str) -> dict[str, str]:
    return {"prefect.resource.id": dataset_resource_id(dataset), "prefect.resource.name": dataset}


def emit_dataset_changed(dataset: str, fingerprint: str, reason: str) -> None:
    """Ask for a retraining of `dataset`: its inputs now have `fingerprint`."""
    emit_event(DATASET_CHANGED, dataset_resource(dataset), payload={"fingerprint": fingerprint, "reason": reason})


def emit_embeddings_published(
    dataset: str, version: str, path: str, metrics: dict[str, Any], latest_moved: bool
) -> None:
    """Announce a published version: its folder is the payload's `path` and the related `version` resource;
    `latest_moved` is false when the quality gate kept `latest` on the parent."""
    version_resource = {
        "prefect.resource.id": f"hyperlearn.version.{dataset}.{version}",
        "prefect.resource.role": "version",
        "hyperlearn.path": path,
    }
    emit_event(
        EMBEDDINGS_PUBLISHED,
        dataset_resource(dataset),
        related=[version_resource],
        payload={"dataset": dataset, "version": version, "path": path, "metrics": metrics, "latest_moved": latest_moved},
    )
