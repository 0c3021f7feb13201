"""The Prefect flow: ingest → build graphs → train → publish, into a staging folder published atomically.

Tasks are thin wrappers over `hyperlearn.pipeline` and `hyperlearn.flows.training`, and pass the run directory and
small JSON summaries, never arrays. Every step writes files as its side effect, so none may be answered from a cache.
A run that fails anywhere removes its staging folder and changes nothing published.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from hyperlearn.config import TrainingConfig
from hyperlearn.flows.cluster import choose_cluster
from hyperlearn.flows.training import Mode, TrainingCluster, train, training_cluster
from hyperlearn.pipeline.graph_build import build_graphs
from hyperlearn.pipeline.ingest import ingest
from hyperlearn.pipeline.lock import dataset_lock
from hyperlearn.pipeline.outputs import (
    VersionRecord,
    staged_run_dir,
    training_summary,
    write_record,
    write_training_outputs,
)
from hyperlearn.pipeline.publish import new_version, publish
from hyperlearn.pipeline.spec import DatasetSpec, load_spec
from hyperlearn.rundir import DatasetDir, RunDir


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_step(spec: DatasetSpec, run: RunDir, catalog_dir: Path) -> dict[str, Any]:
    """Raw logs → validated, de-duplicated relation tensors and the catalog, in `run`."""
    return ingest(spec, run, catalog_dir).to_dict()


@task(name="build-graphs", cache_policy=NO_CACHE)
def build_graphs_step(spec: DatasetSpec, run: RunDir) -> dict[str, Any]:
    """One normalised Laplacian per modality with a graph recipe, in the run's `graphs/`."""
    return {name: stats.to_dict() for name, stats in build_graphs(spec, run).items()}


@task(name="train", cache_policy=NO_CACHE)
def train_step(
    spec: DatasetSpec,
    run: RunDir,
    version: str,
    config: TrainingConfig,
    mode: Mode,
    cluster: Future[TrainingCluster] | None,
) -> dict[str, Any]:
    """Train (distributed: on the run's cluster), write embeddings and the report; return the summary."""
    logger = get_run_logger()
    result, device = train(run, config, mode=mode, cluster=cluster, log=logger.info)
    write_training_outputs(run, dataset=spec.name, version=version, config=config, result=result)
    return training_summary(result, device)


@task(name="publish", cache_policy=NO_CACHE)
def publish_step(run: RunDir, dataset_dir: Path, record: VersionRecord) -> str:
    """Write metrics.json and manifest.json, then rename the staging folder into place and move `latest`."""
    write_record(run, record)
    return str(publish(run.path, dataset_dir, record.version, catalog_source=run.catalog))


@flow(name="hyperlearn-train-embeddings")
def train_embeddings(
    spec_path: str,
    out: str,
    data_root: str | None = None,
    mode: Mode = "distributed",
    overrides: dict[str, Any] | None = None,
    allow_roots: list[str] | None = None,
    wait: bool = False,
    scheduler: str | None = None,
    scheduler_file: str | None = None,
    dashboard: bool = False,
) -> str:
    """Learn embeddings for every modality of the dataset in `spec_path`; publish them under
    `out/<dataset>/<version>/` and return that folder. `overrides` replace settings of the spec's
    `training:` block; `data_root` replaces the spec's folder as the base of its data paths, and data may also
    lie under `allow_roots`. The run holds the dataset's lock from staging to publishing; when another run holds
    it, `wait` queues behind it, else the run fails at once naming the holder. Distributed training uses the Dask
    cluster at `scheduler` (an address) or `scheduler_file`, else DASK_SCHEDULER_ADDRESS, and leaves it running;
    with none of them, a local cluster of its own (with its dashboard on loopback when `dashboard`)."""
    logger = get_run_logger()
    spec = load_spec(
        Path(spec_path),
        None if data_root is None else Path(data_root),
        overrides=overrides,
        allow_roots=[Path(root) for root in allow_roots or ()],
    )
    config = spec.training
    choice = choose_cluster(scheduler, scheduler_file, dashboard, distributed=mode == "distributed")
    dataset_dir = Path(out) / spec.name
    version = new_version()
    seconds: dict[str, float] = {}

    @contextmanager
    def timed(stage: str) -> Iterator[None]:
        """Keep the wall seconds of one stage for metrics.json, and log them."""
        start = time.perf_counter()
        yield
        seconds[stage] = round(time.perf_counter() - start, 3)
        logger.info("%s: %.1f s", stage, seconds[stage])

    logger.info("%s version %s (%s mode), staging in %s", spec.name, version, mode, dataset_dir)
    with (
        dataset_lock(DatasetDir(dataset_dir), wait, log=logger.info),
        staged_run_dir(dataset_dir, version) as run,
        training_cluster(len(spec.modalities), config, mode, choice, log=logger.info) as cluster,
    ):
        with timed("ingest"):
            report = ingest_step(spec, run, DatasetDir(dataset_dir).catalog)
        with timed("graphs"):
            graphs = build_graphs_step(spec, run)
        with timed("train"):
            summary = train_step(spec, run, version, config, mode, cluster)
        with timed("publish"):
            record = VersionRecord(spec, version, config, summary, report, graphs, seconds)
            published = publish_step(run, dataset_dir, record)
    test_metrics = [
        f"{name}={value:.4f}"
        for name, value in summary["metrics"].items()
        if name.startswith("test") and value is not None
    ]
    logger.info("published %s; %s", published, ", ".join(test_metrics))
    return published
