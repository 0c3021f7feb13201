"""Retraining through the real flow: a modality added warm, unchanged inputs skipped, a worse cold run gated."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from hyperlearn.flows.hyperlearn_flow import train_embeddings
from tests.flows.test_hyperlearn_flow import SMALL_TRAINING

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


@pytest.fixture(scope="module")
def specs(small_demo_spec: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The demo's ratings alone (version 1), and the demo with tags added (version 2), on a copy of its data."""
    folder = tmp_path_factory.mktemp("retraining") / "data"
    shutil.copytree(small_demo_spec.parent, folder)
    document = yaml.safe_load((folder / small_demo_spec.name).read_text())
    first = {**document, "modalities": [m for m in document["modalities"] if m["name"] != "tag"],
             "relations": [r for r in document["relations"] if r["name"] == "rating"]}
    (folder / "v1.yaml").write_text(yaml.safe_dump(first, sort_keys=False))
    return folder / "v1.yaml", folder / small_demo_spec.name


def _manifest(version: str | Path) -> dict:
    return json.loads((Path(version) / "manifest.json").read_text())


def _keys_and_ids(version: str | Path, modality: str) -> list[tuple[int, str]]:
    table = pq.read_table(Path(version) / "embeddings" / f"modality={modality}" / "part-0.parquet")
    return list(zip(table.column("entity_id").to_pylist(), table.column("key").to_pylist()))


def test_add_a_modality_warm_skip_unchanged_and_gate_a_worse_run(prefect_server: str, specs, tmp_path: Path):
    first_spec, second_spec = specs
    out = str(tmp_path / "out")
    first = train_embeddings(str(first_spec), out, overrides=SMALL_TRAINING, mode="joint")
    assert first.status == "published" and first.parent is None
    assert _manifest(first.path)["parent"] is None
    assert {entry["path"] for entry in _manifest(first.path)["files"]} >= {
        "encoders/modality=user/weights.npz", "encoders/modality=item/weights.npz"
    }
    dataset = Path(first.path).parent

    again = train_embeddings(str(first_spec), out, overrides=SMALL_TRAINING, mode="joint")
    assert again.status == "skipped" and again.path == first.path
    assert "inputs unchanged since version" in again.reason
    assert sorted(p.name for p in dataset.iterdir() if not p.name.startswith(".")) == sorted(
        ["catalog", "latest", Path(first.path).name]
    )

    added = train_embeddings(str(second_spec), out, overrides=SMALL_TRAINING, mode="joint")
    manifest = _manifest(added.path)
    assert manifest["parent"]["version"] == Path(first.path).name
    assert sorted(manifest["parent"]["warm_started"]) == ["item", "user"] and manifest["parent"]["new"] == ["tag"]
    assert sorted(manifest["parent"]["encoders_resumed"]) == ["item", "user"]
    assert str((second_spec.parent / "taggings.csv").resolve()) in manifest["inputs"]["files"]
    for modality in ("user", "item"):  # ids are stable: every known entity keeps its id (and its row)
        before = _keys_and_ids(first.path, modality)
        assert _keys_and_ids(added.path, modality)[: len(before)] == before

    latest = os.readlink(dataset / "latest")
    worse = train_embeddings(
        str(second_spec), out, mode="joint",
        overrides={**SMALL_TRAINING, "init_from": "none", "init": "random", "rounds": 1, "learning_rate": 1e-6},
    )
    assert worse.status == "gated" and not worse.latest_moved and worse.parent is None
    assert os.readlink(dataset / "latest") == latest, "latest stays on the better version"
    manifest = _manifest(worse.path)
    assert manifest["parent"] is None, "a cold run ignores the parent"
    assert manifest["gated"] is True and manifest["gate"]["parent"] == latest
    assert manifest["gate"]["value"] > manifest["gate"]["parent_value"]
    assert json.loads((Path(worse.path) / "metrics.json").read_text())["gated"] is True
