import json
import os
import re
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hyperlearn.rundir import DatasetDir, RunDir
from hyperlearn.pipeline import publish as publish_module
from hyperlearn.pipeline.publish import (
    finish_interrupted_publish,
    new_version,
    publish,
    write_embeddings,
    write_json_atomic,
)

RANK = 3
METADATA = {
    "hyperlearn.dataset": "demo",
    "hyperlearn.version": "20250101T000000000000Z",
    "hyperlearn.config_hash": "abc",
}


@pytest.fixture
def embeddings() -> dict:
    rng = np.random.default_rng(0)
    return {
        "entity_ids": np.array([0, 1, 2, 3]),
        "keys": ["u0001", "u0002", "u0003", "u0004"],
        "embeddings": rng.normal(size=(4, RANK)).astype(np.float32),
    }


@pytest.fixture
def embeddings_dir(tmp_path: Path, embeddings: dict) -> Path:
    directory = tmp_path / "embeddings"
    write_embeddings(RunDir(tmp_path), modality="user", metadata=METADATA, **embeddings)
    return directory


def test_write_embeddings_schema_and_metadata(embeddings_dir: Path, embeddings: dict):
    path = embeddings_dir / "modality=user" / "part-0.parquet"
    table = pq.read_table(path)
    assert table.schema.field("entity_id").type == pa.int64()
    assert table.schema.field("key").type == pa.string()
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), RANK)
    metadata = {k.decode(): v.decode() for k, v in table.schema.metadata.items() if k.startswith(b"hyperlearn.")}
    assert metadata == {**METADATA, "hyperlearn.modality": "user", "hyperlearn.rank": str(RANK)}
    np.testing.assert_array_equal(np.stack(table["embedding"].to_numpy(zero_copy_only=False)), embeddings["embeddings"])


def test_embeddings_read_by_pandas(embeddings_dir: Path, embeddings: dict):
    frame = pd.read_parquet(embeddings_dir / "modality=user" / "part-0.parquet")
    assert list(frame.columns) == ["entity_id", "key", "embedding"]
    assert frame["key"].tolist() == embeddings["keys"]
    np.testing.assert_array_equal(np.stack(frame["embedding"].to_list()), embeddings["embeddings"])
    assert pd.read_parquet(embeddings_dir)["modality"].astype(str).unique().tolist() == ["user"]  # hive partition


def test_embeddings_read_by_duckdb(embeddings_dir: Path, embeddings: dict):
    glob = (embeddings_dir / "modality=user" / "*.parquet").as_posix()
    relation = duckdb.sql(f"SELECT entity_id, key, embedding FROM read_parquet('{glob}') ORDER BY entity_id")
    # Parquet stores fixed-size lists as plain lists; DuckDB reads FLOAT[] and casts losslessly to FLOAT[R].
    assert [str(t) for t in relation.types] == ["BIGINT", "VARCHAR", "FLOAT[]"]
    rows = relation.fetchall()
    assert [r[1] for r in rows] == embeddings["keys"]
    np.testing.assert_array_equal(np.array([r[2] for r in rows], dtype=np.float32), embeddings["embeddings"])
    cast = duckdb.sql(f"SELECT CAST(embedding AS FLOAT[{RANK}]) AS v FROM read_parquet('{glob}')")
    assert str(cast.types[0]) == f"FLOAT[{RANK}]"
    # Through Arrow, which restores the stored Arrow schema, DuckDB sees the fixed-size array directly.
    arrow_table = pq.read_table(glob.replace("*.parquet", "part-0.parquet"))
    assert str(duckdb.sql("SELECT embedding FROM arrow_table").types[0]) == f"FLOAT[{RANK}]"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"metadata": {"hyperlearn.dataset": "demo"}}, "lacks"),
        ({"metadata": {**METADATA, "hyperlearn.rank": "7"}}, "contradicts"),
        ({"embeddings": np.full((4, RANK), np.nan)}, "NaN"),
        ({"entity_ids": np.array([0, 1, 1, 3])}, "duplicates"),
        ({"keys": ["a", "b"]}, "disagree"),
    ],
)
def test_write_embeddings_rejects_bad_input(tmp_path: Path, embeddings: dict, change: dict, message: str):
    arguments = {**embeddings, "metadata": METADATA, **change}
    with pytest.raises(ValueError, match=message):
        write_embeddings(RunDir(tmp_path), modality="user", **arguments)


# --- publishing ---------------------------------------------------------------------------------------------


def stage(dataset_dir: Path, version: str, catalog_keys: list[str]) -> Path:
    """A staged run with a catalog and a manifest, as a pipeline run leaves it before publishing."""
    staging = DatasetDir(dataset_dir).staging(version).path
    (staging / "catalog").mkdir(parents=True)
    catalog = pa.table({"entity_id": pa.array(range(len(catalog_keys)), pa.int64()), "key": catalog_keys})
    pq.write_table(catalog, staging / "catalog" / "user.parquet")
    write_json_atomic(staging / "manifest.json", {"version": version})
    return staging


def persistent_keys(dataset_dir: Path) -> list[str]:
    return pq.read_table(dataset_dir / "catalog" / "user.parquet")["key"].to_pylist()


def test_publish_moves_version_catalog_and_latest(tmp_path: Path):
    dataset = tmp_path / "demo"
    first = publish(stage(dataset, "v1", ["a"]), dataset, "v1", DatasetDir(dataset).staging("v1").path / "catalog")
    assert first == dataset / "v1" and (first / "manifest.json").is_file()
    assert not DatasetDir(dataset).staging("v1").path.exists()
    assert os.readlink(dataset / "latest") == "v1"
    assert persistent_keys(dataset) == ["a"]

    second = publish(stage(dataset, "v2", ["a", "b"]), dataset, "v2", dataset / ".staging-v2" / "catalog")
    assert os.readlink(dataset / "latest") == "v2"
    assert json.loads((dataset / "latest" / "manifest.json").read_text()) == {"version": "v2"}
    assert persistent_keys(dataset) == ["a", "b"]
    assert (dataset / "v1" / "manifest.json").is_file() and second.is_dir()
    assert sorted(p.name for p in dataset.iterdir()) == ["catalog", "latest", "v1", "v2"]


def test_a_version_renamed_but_never_reached_by_latest_is_finished_unless_the_gate_held_it(tmp_path: Path):
    dataset = tmp_path / "demo"
    publish(stage(dataset, "v1", ["a"]), dataset, "v1", dataset / ".staging-v1" / "catalog")
    os.rename(stage(dataset, "v2", ["a", "b"]), dataset / "v2")  # a run killed right after its rename
    assert finish_interrupted_publish(DatasetDir(dataset), log=lambda message: None) == "v2"
    assert os.readlink(dataset / "latest") == "v2" and persistent_keys(dataset) == ["a", "b"]

    staged = stage(dataset, "v3", ["a", "b", "c"])
    write_json_atomic(staged / "manifest.json", {"version": "v3", "gated": True})
    publish(staged, dataset, "v3", staged / "catalog", move_latest=False)
    assert finish_interrupted_publish(DatasetDir(dataset), log=lambda message: None) is None
    assert os.readlink(dataset / "latest") == "v2", "the gate kept latest on v2"
    assert persistent_keys(dataset) == ["a", "b", "c"], "the catalog is append-only, gated or not"


def test_publish_without_catalog_leaves_catalog_alone(tmp_path: Path):
    dataset = tmp_path / "demo"
    publish(stage(dataset, "v1", ["a"]), dataset, "v1", dataset / ".staging-v1" / "catalog")
    publish(stage(dataset, "v2", ["a", "b"]), dataset, "v2", None)
    assert persistent_keys(dataset) == ["a"]
    assert os.readlink(dataset / "latest") == "v2"


def test_failure_before_rename_leaves_previous_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    dataset = tmp_path / "demo"
    publish(stage(dataset, "v1", ["a"]), dataset, "v1", dataset / ".staging-v1" / "catalog")
    staging = stage(dataset, "v2", ["a", "b"])

    def failing_rename(*_):
        raise OSError("disk on fire")

    monkeypatch.setattr(publish_module.os, "rename", failing_rename)
    with pytest.raises(OSError, match="disk on fire"):
        publish(staging, dataset, "v2", staging / "catalog")
    assert os.readlink(dataset / "latest") == "v1"
    assert not (dataset / "v2").exists() and staging.is_dir()
    assert persistent_keys(dataset) == ["a"]
    assert json.loads((dataset / "v1" / "manifest.json").read_text()) == {"version": "v1"}


def test_failure_while_copying_catalog_keeps_latest_and_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    dataset = tmp_path / "demo"
    publish(stage(dataset, "v1", ["a"]), dataset, "v1", dataset / ".staging-v1" / "catalog")
    staging = stage(dataset, "v2", ["a", "b"])

    def failing_copy(source, destination):
        Path(destination).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copyfile", failing_copy)
    with pytest.raises(OSError, match="disk full"):
        publish(staging, dataset, "v2", staging / "catalog")
    assert os.readlink(dataset / "latest") == "v1"
    assert persistent_keys(dataset) == ["a"]
    assert [p.name for p in (dataset / "catalog").iterdir()] == ["user.parquet"]  # no temporary file left


def test_publish_refuses_misplaced_staging_and_existing_versions(tmp_path: Path):
    dataset = tmp_path / "demo"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(ValueError, match="inside"):
        publish(elsewhere, dataset, "v1", None)
    publish(stage(dataset, "v1", ["a"]), dataset, "v1", None)
    with pytest.raises(FileExistsError):
        publish(stage(dataset, "v1", ["b"]), dataset, "v1", None)
    with pytest.raises(ValueError, match="invalid version"):
        publish(DatasetDir(dataset).staging("v1").path, dataset, "../v3", None)
    staging = stage(dataset, "v2", ["a"])
    with pytest.raises(FileNotFoundError, match="catalog"):
        publish(staging, dataset, "v2", staging / "no-such-folder")
    assert staging.is_dir() and not (dataset / "v2").exists()  # checked before anything moved


def test_new_version_and_staging_dir():
    first, second = new_version(), new_version()
    assert re.fullmatch(r"\d{8}T\d{12}Z", first)
    assert first <= second
    assert DatasetDir(Path("/out/demo")).staging(first).path == Path(f"/out/demo/.staging-{first}")


def test_write_json_atomic_replaces_whole_file_or_nothing(tmp_path: Path):
    path = tmp_path / "sub" / "metrics.json"
    write_json_atomic(path, {"rmse": 0.9})
    write_json_atomic(path, {"rmse": 0.8, "curve": [1, 2]})
    assert json.loads(path.read_text()) == {"rmse": 0.8, "curve": [1, 2]}
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"rmse": 0.8, "curve": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]
