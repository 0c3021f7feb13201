"""The Prefect flow: ingest → build graphs → train → publish, into a staging folder published atomically.

Tasks are thin wrappers over `pipeline`, `hyperlearn.flows.training` and `hyperlearn.flows.outputs`, and pass paths and small JSON
summaries, never arrays. Every step writes files as its side effect, so none may be answered from a cache.
A run that fails anywhere removes its staging folder and changes nothing published.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from hyperlearn.flows.outputs import (
    staged_run_dir,
    training_summary,
    write_manifest,
    write_metrics,
    write_training_outputs,
)
from hyperlearn.flows.training import Mode, train, training_config
from hyperlearn.config import TrainingConfig
from hyperlearn.pipeline.graph_build import build_graphs
from hyperlearn.pipeline.ingest import ingest
from hyperlearn.pipeline.publish import CATALOG, new_version, publish
from hyperlearn.pipeline.spec import DatasetSpec, load_spec


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_step(spec: DatasetSpec, run_dir: str, catalog_dir: str) -> dict[str, Any]:
    """Raw logs → validated, de-duplicated relation tensors and the catalog, in `run_dir`."""
    return ingest(spec, Path(run_dir), Path(catalog_dir)).to_dict()


@task(name="build-graphs", cache_policy=NO_CACHE)
def build_graphs_step(spec: DatasetSpec, run_dir: str) -> dict[str, Any]:
    """One normalised Laplacian per modality with a graph recipe, in `run_dir/graphs/`."""
    return {name: stats.to_dict() for name, stats in build_graphs(spec, Path(run_dir)).items()}


@task(name="train", cache_policy=NO_CACHE)
def train_step(spec: DatasetSpec, run_dir: str, version: str, config: TrainingConfig, mode: Mode) -> dict[str, Any]:
    """Train (on a fresh cluster in distributed mode), write embeddings and the report; return the summary."""
    logger = get_run_logger()
    result, device = train(Path(run_dir), config, mode=mode, n_modalities=len(spec.modalities), log=logger.info)
    write_training_outputs(Path(run_dir), dataset=spec.name, version=version, config=config, result=result)
    return training_summary(result, device)


@task(name="publish", cache_policy=NO_CACHE)
def publish_step(
    spec: DatasetSpec,
    run_dir: str,
    dataset_dir: str,
    version: str,
    config: TrainingConfig,
    summary: dict[str, Any],
    ingest_report: dict[str, Any],
    graph_stats: dict[str, Any],
    stage_seconds: dict[str, float],
) -> str:
    """Write metrics.json and manifest.json, then rename the staging folder into place and move `latest`."""
    write_metrics(Path(run_dir), summary, stage_seconds)
    write_manifest(
        Path(run_dir),
        spec_path=spec.spec_path,
        spec_hash=spec.spec_hash,
        dataset=spec.name,
        version=version,
        modalities=[m.name for m in spec.modalities],
        config=config,
        summary=summary,
        ingest_report=ingest_report,
        graph_stats=graph_stats,
    )
    published = publish(Path(run_dir), Path(dataset_dir), version, catalog_source=Path(run_dir) / CATALOG)
    return str(published)


@flow(name="hyperlearn-train-embeddings")
def train_embeddings(
    spec_path: str,
    out: str,
    data_root: str | None = None,
    mode: Mode = "distributed",
    overrides: dict[str, Any] | None = None,
) -> str:
    """Learn embeddings for every modality of the dataset in `spec_path`; publish them under
    `out/<dataset>/<version>/` and return that folder. `overrides` replace settings of the spec's
    `training:` block; `data_root` replaces the spec's folder as the base of its data paths."""
    logger = get_run_logger()
    spec = load_spec(Path(spec_path), None if data_root is None else Path(data_root))
    config = training_config(spec, overrides)
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
    with staged_run_dir(dataset_dir, version) as staging:
        run_dir = str(staging)
        with timed("ingest"):
            report = ingest_step(spec, run_dir, str(dataset_dir / CATALOG))
        with timed("graphs"):
            graphs = build_graphs_step(spec, run_dir)
        with timed("train"):
            summary = train_step(spec, run_dir, version, config, mode)
        with timed("publish"):
            published = publish_step(spec, run_dir, str(dataset_dir), version, config, summary, report, graphs, seconds)
    test_metrics = [
        f"{name}={value:.4f}"
        for name, value in summary["metrics"].items()
        if name.startswith("test") and value is not None
    ]
    logger.info("published %s; %s", published, ", ".join(test_metrics))
    return published
