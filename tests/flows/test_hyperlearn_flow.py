"""The training flow end to end: a real Prefect run on a temporary server, a real Dask cluster, real files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb
import pytest

from hyperlearn.flows import hyperlearn_flow
from hyperlearn.flows.hyperlearn_flow import train_embeddings
from hyperlearn.config import TrainingConfig
from hyperlearn.pipeline.lock import DatasetBusy, dataset_lock
from hyperlearn.pipeline.sources.synthetic import TRAINING as DEMO_TRAINING
from hyperlearn.rundir import DatasetDir

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

#: Small enough that a run takes seconds on two cores.
SMALL_TRAINING = {
    "rank": 4,
    "rounds": 3,
    "local_steps": 2,
    "diffusion_steps": 2,
    "conv_width": 8,
    "lstm_width": 8,
    "init_iterations": 2,
    "patience": 2,
}


@pytest.fixture(scope="module")
def published(prefect_server: str, small_demo_spec: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out")
    return Path(train_embeddings(str(small_demo_spec), str(out), overrides=SMALL_TRAINING).path)


def test_publishes_a_version_and_moves_latest_to_it(published: Path):
    dataset_dir = published.parent
    assert published.name[:8].isdigit() and published.name.endswith("Z")
    assert os.readlink(dataset_dir / "latest") == published.name
    assert not list(dataset_dir.glob(".staging-*"))
    for part in ["catalog", "relations", "graphs", "checkpoints", "quarantine", "report.png"]:
        assert (published / part).exists(), part
    catalog = sorted(p.name for p in (dataset_dir / "catalog").iterdir())
    assert catalog == ["item.parquet", "tag.parquet", "user.parquet"]


def test_embeddings_are_readable_with_duckdb(published: Path):
    latest = published.parent / "latest"
    rows = duckdb.sql(
        f"""
        select modality, count(*) as entities, min(len(embedding)) as rank_min, max(len(embedding)) as rank_max,
               min(entity_id) as first_id, max(entity_id) as last_id, count(distinct key) as keys
        from read_parquet('{latest}/embeddings/*/*.parquet', hive_partitioning = true)
        group by modality order by modality
        """
    ).fetchall()
    manifest = json.loads((published / "manifest.json").read_text())
    assert [row[0] for row in rows] == ["item", "tag", "user"]
    for modality, entities, rank_min, rank_max, first_id, last_id, keys in rows:
        assert entities == keys == manifest["entities"][modality] == last_id + 1
        assert (rank_min, rank_max, first_id) == (4, 4, 0)

    metadata = dict(
        duckdb.sql(
            f"select decode(key), decode(value) from parquet_kv_metadata("
            f"'{published}/embeddings/modality=user/part-0.parquet')"
        ).fetchall()
    )
    config = TrainingConfig.from_dict({**DEMO_TRAINING, **SMALL_TRAINING})
    assert metadata["hyperlearn.dataset"] == "demo"
    assert metadata["hyperlearn.version"] == published.name
    assert metadata["hyperlearn.modality"] == "user"
    assert metadata["hyperlearn.rank"] == "4"
    assert metadata["hyperlearn.config_hash"] == config.config_hash() == manifest["config_hash"]


def test_metrics_and_manifest_describe_the_run(published: Path, small_demo_spec: Path):
    metrics = json.loads((published / "metrics.json").read_text())
    assert metrics["mode"] == "distributed" and metrics["device"] == "cpu"
    assert 0 < metrics["metrics"]["test_rmse"] < 2
    assert set(metrics["stage_seconds"]) == {"ingest", "graphs", "train"}
    assert [row["round"] for row in metrics["history"]][:2] == [0, 1]

    manifest = json.loads((published / "manifest.json").read_text())
    assert manifest["spec"]["path"] == str(small_demo_spec.resolve())
    assert manifest["spec"]["hash"] == manifest["ingest"]["spec_hash"]
    assert manifest["version"] == published.name
    assert set(manifest["graphs"]) == {"user", "item"}
    listed = {entry["path"]: entry["bytes"] for entry in manifest["files"]}
    assert listed["metrics.json"] == (published / "metrics.json").stat().st_size
    assert "embeddings/modality=tag/part-0.parquet" in listed
    assert "manifest.json" not in listed
    on_disk = {p.relative_to(published).as_posix() for p in published.rglob("*") if p.is_file()}
    assert on_disk - set(listed) == {"manifest.json"}


def test_a_failed_run_changes_nothing_published(published: Path, small_demo_spec: Path, monkeypatch):
    dataset_dir = published.parent
    before = _snapshot(dataset_dir)

    def training_fails(*args, **kwargs):
        raise RuntimeError("trainer crashed")

    monkeypatch.setattr(hyperlearn_flow, "train", training_fails)
    with pytest.raises(RuntimeError, match="trainer crashed"):
        train_embeddings(str(small_demo_spec), str(dataset_dir.parent), overrides=SMALL_TRAINING, force=True)
    assert _snapshot(dataset_dir) == before
    assert not list(dataset_dir.glob(".staging-*"))


def test_a_run_on_a_dataset_another_run_holds_fails_at_once_naming_it(published: Path, small_demo_spec: Path):
    dataset_dir = published.parent
    before = _snapshot(dataset_dir)
    with dataset_lock(DatasetDir(dataset_dir), log=lambda line: None):
        with pytest.raises(DatasetBusy, match=rf"locked by another run \(pid {os.getpid()} on "):
            train_embeddings(str(small_demo_spec), str(dataset_dir.parent), overrides=SMALL_TRAINING)
    assert _snapshot(dataset_dir) == before


def test_bad_parameters_fail_before_anything_is_written(prefect_server: str, small_demo_spec: Path, tmp_path: Path):
    with pytest.raises(ValueError, match=r"--rank: input should be greater than or equal to 1"):
        train_embeddings(str(small_demo_spec), str(tmp_path), overrides={"rank": 0})
    with pytest.raises(Exception, match="mode"):
        train_embeddings(str(small_demo_spec), str(tmp_path), mode="sequential")
    assert list(tmp_path.iterdir()) == []


def _snapshot(dataset_dir: Path) -> dict[str, object]:
    """Every entry under a dataset folder: files by content, links by target."""
    snapshot: dict[str, object] = {}
    for path in sorted(dataset_dir.rglob("*")):
        name = path.relative_to(dataset_dir).as_posix()
        if path.is_symlink():
            snapshot[name] = ("link", os.readlink(path))
        elif path.is_file():
            snapshot[name] = path.read_bytes()
    return snapshot


def test_the_run_carries_its_metrics_table_version_link_and_report_image(published: Path):
    import base64
    import io

    from PIL import Image
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        links = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["demo-version"])))
        [link] = [artifact for artifact in links if published.as_uri() in artifact.data]
        by_key = {
            artifact.key: artifact
            for artifact in client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[link.flow_run_id]))
            )
        }
    assert set(by_key) == {"demo-metrics", "demo-version", "demo-report"}
    metrics = json.loads((published / "metrics.json").read_text())["metrics"]
    table = json.loads(by_key["demo-metrics"].data)
    assert {row["metric"]: row["value"] for row in table} == pytest.approx(metrics)
    assert by_key["demo-report"].type == "image"
    header, encoded = by_key["demo-report"].data.split(",", 1)
    assert header == "data:image/png;base64"
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as image, Image.open(published / "report.png") as report:
        assert image.size == report.size
