"""The resume key: a killed run's staging folder is resumed only by a run of the same spec, settings, mode, data
and dataset state."""

import os
from pathlib import Path

import pytest

from hyperlearn.pipeline.lock import dataset_lock
from hyperlearn.pipeline.resumable import is_resumable, resume_key, staging_version, write_resume_record
from hyperlearn.pipeline.spec import load_spec
from hyperlearn.rundir import DatasetDir


@pytest.fixture
def spec_path(small_demo_spec: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    copy.mkdir()
    for file in small_demo_spec.parent.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    return copy / small_demo_spec.name


def test_the_key_changes_with_settings_mode_data_and_latest(spec_path: Path, tmp_path: Path):
    dataset = DatasetDir(tmp_path / "out" / "demo")
    spec = load_spec(spec_path)
    key = resume_key(spec, "joint", dataset)
    assert resume_key(load_spec(spec_path), "joint", dataset) == key
    assert resume_key(load_spec(spec_path, overrides={"rank": 3}), "joint", dataset) != key
    assert resume_key(spec, "distributed", dataset) != key
    dataset.path.mkdir(parents=True)
    os.symlink("v1", dataset.latest)
    assert resume_key(spec, "joint", dataset) != key
    after_publish = resume_key(spec, "joint", dataset)
    source = next(p for p in spec_path.parent.iterdir() if p.suffix == ".csv")
    source.write_text(source.read_text() + "\n")
    assert resume_key(spec, "joint", dataset) != after_publish


def test_the_lock_keeps_the_resumable_staging_and_removes_the_others(tmp_path: Path):
    dataset = DatasetDir(tmp_path / "demo")
    for version, key in (("v1", "other"), ("v2", "mine"), ("v3", None)):
        staging = dataset.staging(version)
        staging.path.mkdir(parents=True)
        if key is not None:
            write_resume_record(staging, key, ingest={}, graphs={})
    removed: list[str] = []
    with dataset_lock(dataset, log=removed.append, keep=lambda staging: is_resumable(staging, "mine")) as kept:
        assert kept is not None and staging_version(kept) == "v2"
        assert [staging_version(s) for s in dataset.stagings()] == ["v2"]
    assert sorted(removed) == [f"removing .staging-{v}, left by a run that did not finish" for v in ("v1", "v3")]
