"""The Prefect flow: ingest → build graphs → train → publish, into a staging folder published atomically.

Tasks are thin wrappers over `hyperlearn.pipeline` and `hyperlearn.flows.training`, and pass the run directory and
small JSON summaries, never arrays. Every step writes files as its side effect, so none may be answered from a cache.
Before anything is staged the run picks its parent version (`training.init_from`) and is skipped when its
inputs are unchanged since it; training warm-starts from the parent; the quality gate decides whether `latest`
moves (hyperlearn.pipeline.lineage, .fingerprint, .gate; hyperlearn.warm_start).

A run that fails anywhere removes its staging folder and changes nothing published; so does a run sent SIGINT or
SIGTERM, even where Python dropped the exception the signal raised (hyperlearn.flows.stop_signals). A run killed
outright (kill -9, power loss) leaves its staging folder; the next run of the same spec, settings and data
resumes it from its last checkpoint (`hyperlearn.pipeline.resumable`), unless it is asked to start `fresh`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import cache
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from hyperlearn.config import TrainingConfig
from hyperlearn.flows.artifacts import create_version_artifacts
from hyperlearn.flows.cluster import choose_cluster
from hyperlearn.flows.events import emit_embeddings_published
from hyperlearn.flows.stop_signals import watching_stop_signals
from hyperlearn.flows.training import (
    Mode,
    TrainingCluster,
    graph_device,
    is_transient,
    start_from_parent,
    train,
    training_cluster,
)
from hyperlearn.pipeline.fingerprint import input_fingerprint
from hyperlearn.pipeline.gate import judge
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
from hyperlearn.pipeline.lineage import RunOutcome, parent_version, recorded_inputs, recorded_metrics, unchanged_since
from hyperlearn.pipeline.resumable import (
    is_resumable,
    read_resume_record,
    resume_key,
    staging_version,
    write_resume_record,
)
from hyperlearn.pipeline.spec import DatasetSpec, load_spec
from hyperlearn.rundir import DatasetDir, RunDir
from hyperlearn.workers import cluster_workers


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_step(
    spec: DatasetSpec, run: RunDir, catalog_dir: Path, cluster: Future[TrainingCluster] | None = None
) -> dict[str, Any]:
    """Raw logs → validated, de-duplicated relation tensors and the catalog, in `run`; with `cluster` (an
    existing cluster the run trains on), the sources are read and validated on its workers."""
    client = None if cluster is None else cluster.result().client
    report = ingest(spec, run, catalog_dir, client=client)
    if report.read_on is not None:
        workers = len(cluster_workers(client))
        get_run_logger().info("ingest: the sources were read and validated on the cluster's %d worker(s)", workers)
    return report.to_dict()


@task(name="build-graphs", cache_policy=NO_CACHE)
def build_graphs_step(spec: DatasetSpec, run: RunDir, device: str = "cpu") -> dict[str, Any]:
    """One normalised Laplacian per modality with a graph recipe, in the run's `graphs/`, built on `device`."""
    return {name: stats.to_dict() for name, stats in build_graphs(spec, run, device).items()}


#: Attempts of the train task after a transient failure (a lost worker, a cluster that did not start), and the
#: seconds between them; permanent failures (bad spec, bad data) are never retried.
TRAIN_RETRIES = 2
TRAIN_RETRY_DELAY_SECONDS = 10


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry condition for the train task: retry only a transient failure (`is_transient`)."""
    return is_transient(state.result(raise_on_failure=False))


@task(
    name="train", cache_policy=NO_CACHE, retries=TRAIN_RETRIES, retry_delay_seconds=TRAIN_RETRY_DELAY_SECONDS,
    retry_condition_fn=retry_transient,
)
def train_step(
    spec: DatasetSpec,
    run: RunDir,
    version: str,
    config: TrainingConfig,
    mode: Mode,
    cluster: Future[TrainingCluster] | None,
    parent: RunDir | None,
    resume: bool = False,
) -> tuple[dict[str, Any], dict[str, Any] | None, str | None]:
    """Train (distributed: on the run's cluster; `resume`: from the run's checkpoint), warm-started from `parent`
    when it can seed the run, write embeddings, resumable weights and the report; return the summary, the
    manifest's `parent` record (None: a cold start) and why a run that had a parent started cold."""
    logger = get_run_logger()
    warm, cold_reason = (None, None) if parent is None else start_from_parent(run, parent, config, logger.info)
    result, device = train(run, config, mode=mode, cluster=cluster, log=logger.info, warm=warm, resume=resume)
    write_training_outputs(run, dataset=spec.name, version=version, config=config, result=result)
    lineage = None if warm is None else {"version": warm.parent, "warm_started": list(warm.warm_started),
                                         "new": list(warm.new), "encoders_resumed": sorted(warm.encoders)}
    return training_summary(result, device), lineage, cold_reason


@task(name="publish", cache_policy=NO_CACHE)
def publish_step(run: RunDir, dataset_dir: Path, record: VersionRecord, move_latest: bool) -> str:
    """Write metrics.json and manifest.json, then rename the staging folder into place and, unless the quality
    gate held the version back, move `latest`."""
    run.remove_resume_files()
    write_record(run, record)
    return str(publish(run.path, dataset_dir, record.version, catalog_source=run.catalog, move_latest=move_latest))


@flow(name="hyperlearn-train-embeddings")
def train_embeddings(
    spec_path: str,
    out: str,
    data_root: str | None = None,
    mode: Mode = "distributed",
    overrides: dict[str, Any] | None = None,
    allow_roots: list[str] | None = None,
    wait: bool = False,
    fresh: bool = False,
    force: bool = False,
    scheduler: str | None = None,
    scheduler_file: str | None = None,
    dashboard: bool = False,
    rmm_pool_size: str | None = None,
) -> RunOutcome:
    """Learn embeddings for every modality of the dataset in `spec_path`; publish them under
    `out/<dataset>/<version>/` and say what came of it (hyperlearn.pipeline.lineage.RunOutcome: published,
    gated, or skipped). `overrides` replace settings of the spec's `training:` block; `data_root` replaces the
    spec's folder as the base of its data paths, and data may also lie under `allow_roots`. The run starts from
    its parent version (`training.init_from`); when its inputs equal the parent's it is skipped, unless `force`.
    The run holds the dataset's lock from the parent's choice to publishing; when another run holds it, `wait`
    queues behind it, else the run fails at once naming the holder. The staging folder a killed run of
    the same spec, settings and data left is resumed from its last checkpoint; `fresh` removes it instead.
    A version whose publishing was cut short after its rename is published first (`finish_interrupted_publish`).
    Distributed training uses the Dask cluster at `scheduler` (an address) or `scheduler_file`, else
    DASK_SCHEDULER_ADDRESS, and leaves it running; with none of them, a local cluster of its own (with its
    dashboard on loopback when `dashboard`, and on GPUs an RMM pool of `rmm_pool_size` per worker)."""
    logger = get_run_logger()
    spec = load_spec(
        Path(spec_path),
        None if data_root is None else Path(data_root),
        overrides=overrides,
        allow_roots=[Path(root) for root in allow_roots or ()],
    )
    config = spec.training
    choice = choose_cluster(scheduler, scheduler_file, dashboard, mode == "distributed", rmm_pool_size)
    dataset_dir = Path(out) / spec.name
    dataset = DatasetDir(dataset_dir)
    seconds: dict[str, float] = {}

    @cache
    def key() -> str:
        """Computed under the lock, after it finished any interrupted publish, so it sees the final `latest`."""
        return resume_key(spec, mode, dataset)

    @contextmanager
    def timed(stage: str) -> Iterator[None]:
        """Keep the wall seconds of one stage for metrics.json, and log them."""
        start = time.perf_counter()
        yield
        seconds[stage] = round(time.perf_counter() - start, 3)
        logger.info("%s: %.1f s", stage, seconds[stage])

    resumable = (lambda staging: False) if fresh else (lambda staging: is_resumable(staging, key()))
    with watching_stop_signals() as stop_signals, dataset_lock(dataset, wait, log=logger.info, keep=resumable) as kept:
        parent = parent_version(dataset, config.init_from)
        inputs = input_fingerprint(spec, mode)
        same = None if force or kept is not None else unchanged_since(dataset, parent, inputs)
        if same is not None:
            reason = f"inputs unchanged since version {same.path.name} (spec, {len(inputs.files)} source files, " \
                     "settings): nothing to train; --force retrains"
            logger.info("skipped: %s", reason)
            return RunOutcome("skipped", spec.name, same.path.name, str(same.path), same.path.name, None, reason)
        if parent is not None:
            recorded = recorded_inputs(parent)
            changes = ["its inputs were not recorded"] if recorded is None else inputs.changes_from(recorded)
            logger.info("parent %s; changed since: %s", parent.path.name, "; ".join(changes) or "nothing (forced)")
        latest = parent_version(dataset, "latest")  # what the gate protects, whatever the run started from
        version = new_version() if kept is None else staging_version(kept)
        logger.info("%s version %s (%s mode), %s in %s", spec.name, version, mode,
                    "staging" if kept is None else "resuming the killed run's staging", dataset_dir)
        with (
            staged_run_dir(dataset_dir, version, existing=kept is not None) as run,
            training_cluster(len(spec.modalities), config, mode, choice, log=logger.info) as cluster,
        ):
            prepared = None if kept is None else read_resume_record(kept)
            if prepared is None:
                with timed("ingest"):
                    report = ingest_step(spec, run, dataset.catalog, cluster if choice.existing else None)
                with timed("graphs"):
                    graphs = build_graphs_step(spec, run, graph_device(config))
                write_resume_record(run, key(), report, graphs)
            else:
                report, graphs = prepared["ingest"], prepared["graphs"]
            with timed("train"):
                summary, lineage, cold_reason = train_step(
                    spec, run, version, config, mode, cluster, parent, resume=prepared is not None
                )
            gate = judge(
                spec.publish.gate, summary["metrics"], None if latest is None else recorded_metrics(latest),
                None if latest is None else latest.path.name,
            )
            if gate is not None:
                logger.info("quality gate: %s", gate.reason)
            stop_signals.raise_if_received("publishing")
            with timed("publish"):
                record = VersionRecord(
                    spec, version, config, summary, report, graphs, seconds, inputs=inputs.to_dict(), parent=lineage,
                    cold_start_reason=cold_reason, gate=None if gate is None else gate.to_dict(),
                )
                published = publish_step(run, dataset_dir, record, move_latest=gate is None or gate.passed)
    test_metrics = [
        f"{name}={value:.4f}"
        for name, value in summary["metrics"].items()
        if name.startswith("test") and value is not None
    ]
    status = "gated" if gate is not None and gate.gated else "published"
    reason = f"{status} {published}; {', '.join(test_metrics)}"
    if status == "gated":
        reason += f"; latest stays on {gate.parent}: {gate.reason}"
    logger.info(reason)
    announce_version(spec.name, version, published, summary["metrics"], latest_moved=status == "published")
    return RunOutcome(status, spec.name, version, published, None if parent is None else parent.path.name,
                      None if gate is None else gate.to_dict(), reason)


def announce_version(
    dataset: str, version: str, published: str, metrics: dict[str, float | None], latest_moved: bool
) -> None:
    """After publishing: the run's artifacts (metrics table, link, report) and the
    `hyperlearn.embeddings.published` event, for downstream flows to trigger on (`latest_moved` false: the
    quality gate kept `latest` on the parent). The version is published by then, so artifacts the server refuses
    are logged as a warning rather than failing the run."""
    try:
        create_version_artifacts(dataset, version, Path(published), metrics)
    except Exception as error:  # noqa: BLE001 - the version stands whatever the artifacts API answers
        get_run_logger().warning("the artifacts of %s could not be created: %s: %s", published,
                                 type(error).__name__, error)
    emit_embeddings_published(dataset, version, published, metrics, latest_moved)
