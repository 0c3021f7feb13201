"""The inputs' content fingerprint that `hyperlearn schedule --on-change` polls."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperlearn.pipeline.fingerprint import input_fingerprint
from hyperlearn.pipeline.spec import SpecError

SPEC = """\
name: tiny
modalities: [{name: user}, {name: item}]
relations:
- name: rating
  modalities: {user: user_id, item: item_id}
  value: rating
  source: {path: "ratings/*.csv", format: csv}
"""


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    (tmp_path / "ratings").mkdir()
    (tmp_path / "ratings" / "a.csv").write_text("user_id,item_id,rating\nu1,i1,4\nu2,i1,3\n")
    path = tmp_path / "tiny.yaml"
    path.write_text(SPEC)
    return path


def test_the_same_bytes_give_the_same_fingerprint_even_when_rewritten(spec: Path):
    before = input_fingerprint(spec)
    source = spec.parent / "ratings" / "a.csv"
    source.write_bytes(source.read_bytes())
    assert input_fingerprint(spec) == before
    assert len(before) == 64


@pytest.mark.parametrize(
    "change",
    [
        lambda root: (root / "ratings" / "b.csv").write_text("user_id,item_id,rating\nu3,i2,5\n"),
        lambda root: (root / "ratings" / "a.csv").write_text("user_id,item_id,rating\nu1,i1,5\nu2,i1,3\n"),
        lambda root: (root / "tiny.yaml").write_text(SPEC + "training: {rank: 4}\n"),
    ],
    ids=["a new file matching the glob", "an edited source", "an edited spec"],
)
def test_a_change_of_the_inputs_changes_the_fingerprint(spec: Path, change):
    before = input_fingerprint(spec)
    change(spec.parent)
    assert input_fingerprint(spec) != before


def test_a_file_the_glob_does_not_match_is_no_change(spec: Path):
    before = input_fingerprint(spec)
    (spec.parent / "ratings" / "notes.txt").write_text("not data")
    assert input_fingerprint(spec) == before


def test_unreadable_inputs_have_no_fingerprint(spec: Path):
    (spec.parent / "ratings" / "a.csv").unlink()
    with pytest.raises(SpecError, match="no file matches"):
        input_fingerprint(spec)
    spec.write_text("name: [")
    with pytest.raises(SpecError, match="tiny.yaml"):
        input_fingerprint(spec)


def test_a_cache_reads_again_only_files_whose_size_or_time_moved(spec: Path):
    import os

    from hyperlearn.pipeline.fingerprint import HashCache

    cache: HashCache = {}
    first = input_fingerprint(spec, cache=cache)
    assert first == input_fingerprint(spec)
    [(path, (size, mtime, digest))] = cache.items()
    cache[path] = (size, mtime, "0" * 64)  # what a file unchanged in size and time is taken to hold
    assert input_fingerprint(spec, cache=cache) != first
    os.utime(path, ns=(mtime + 1_000_000_000, mtime + 1_000_000_000))
    assert input_fingerprint(spec, cache=cache) == first
    assert cache[path][2] == digest
