"""The parent version (init_from), the skip of unchanged inputs, and a gated publish that keeps `latest`."""

import json
import os
from pathlib import Path

import pytest

from hyperlearn.pipeline.fingerprint import InputFingerprint
from hyperlearn.pipeline.lineage import (
    RunOutcome,
    parent_version,
    published_versions,
    recorded_inputs,
    recorded_metrics,
    unchanged_since,
)
from hyperlearn.pipeline.publish import publish
from hyperlearn.rundir import DatasetDir

INPUTS = InputFingerprint("spec", {"/data/ratings-1.csv": "aa"}, "settings")


def _publish(dataset: DatasetDir, version: str, inputs: InputFingerprint | None, move_latest: bool = True) -> Path:
    staging = dataset.staging(version)
    staging.path.mkdir(parents=True)
    staging.manifest.write_text(json.dumps({"inputs": None if inputs is None else inputs.to_dict()}))
    staging.metrics.write_text(json.dumps({"metrics": {"validation/r/rmse": 0.4}}))
    return publish(staging.path, dataset.path, version, catalog_source=None, move_latest=move_latest)


def test_init_from_picks_latest_a_named_version_or_none(tmp_path: Path):
    dataset = DatasetDir(tmp_path / "d")
    assert parent_version(dataset, "latest") is None, "nothing published yet: a cold start"
    _publish(dataset, "v1", INPUTS)
    _publish(dataset, "v2", INPUTS)
    assert parent_version(dataset, "latest").path.name == "v2"
    assert parent_version(dataset, "v1").path == dataset.version("v1").path
    assert parent_version(dataset, "none") is None
    with pytest.raises(FileNotFoundError, match="no version 'v9'.*published: v1, v2"):
        parent_version(dataset, "v9")
    assert recorded_inputs(dataset.version("v1")) == INPUTS
    assert recorded_metrics(dataset.version("v1")) == {"validation/r/rmse": 0.4}


def test_a_gated_publish_keeps_latest_and_the_version(tmp_path: Path):
    dataset = DatasetDir(tmp_path / "d")
    _publish(dataset, "v1", INPUTS)
    kept = _publish(dataset, "v2", INPUTS, move_latest=False)
    assert kept.is_dir() and os.readlink(dataset.latest) == "v1"
    assert published_versions(dataset) == ["v1", "v2"]


def test_unchanged_inputs_match_the_parent_or_the_newest_version_and_a_cold_run_never_skips(tmp_path: Path):
    dataset = DatasetDir(tmp_path / "d")
    _publish(dataset, "v1", INPUTS)
    parent = parent_version(dataset, "latest")
    assert unchanged_since(dataset, parent, INPUTS).path.name == "v1"
    assert unchanged_since(dataset, None, INPUTS) is None
    changed = InputFingerprint("spec", {**INPUTS.files, "/data/ratings-2.csv": "bb"}, "settings")
    assert unchanged_since(dataset, parent, changed) is None
    _publish(dataset, "v2", changed, move_latest=False)  # gated: latest stays on v1
    assert unchanged_since(dataset, parent_version(dataset, "latest"), changed).path.name == "v2"
    _publish(dataset, "v3", None)  # a version from before inputs were recorded
    assert unchanged_since(dataset, dataset.version("v3"), INPUTS) is None


def test_a_run_outcome_says_whether_latest_moved():
    outcome = RunOutcome("gated", "d", "v2", "/out/d/v2", "v1", {"gated": True}, "worse")
    assert not outcome.latest_moved and outcome.to_dict()["latest_moved"] is False
    assert RunOutcome("published", "d", "v2", "/out/d/v2", "v1", None, "").latest_moved
