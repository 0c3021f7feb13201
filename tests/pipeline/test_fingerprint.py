"""The input fingerprint: spec hash, every source file's SHA-256 (globs and folders expanded), the settings."""

import hashlib
from pathlib import Path

import pytest

from hyperlearn.pipeline.fingerprint import InputFingerprint, input_fingerprint
from hyperlearn.pipeline.spec import load_spec

SPEC = """
name: logs
modalities: [{name: user}, {name: item}]
relations:
  - name: rating
    modalities: {user: user, item: item}
    value: rating
    source: {path: "ratings-*.csv", format: csv}
training: {rank: 4}
"""


def _write(folder: Path, name: str, rows: str) -> Path:
    path = folder / name
    path.write_text("user,item,rating\n" + rows)
    return path


@pytest.fixture
def spec_path(tmp_path: Path) -> Path:
    _write(tmp_path, "ratings-1.csv", "u1,i1,4\nu2,i1,3\n")
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    return path


def test_the_fingerprint_records_each_file_and_is_stable(spec_path: Path):
    first = input_fingerprint(load_spec(spec_path))
    second = input_fingerprint(load_spec(spec_path))
    assert first == second and first.digest == second.digest
    file = str((spec_path.parent / "ratings-1.csv").resolve())
    assert first.files == {file: hashlib.sha256((spec_path.parent / "ratings-1.csv").read_bytes()).hexdigest()}
    assert InputFingerprint.from_dict(first.to_dict()) == first
    assert first.changes_from(second) == []


def test_a_new_file_matching_a_glob_source_changes_it(spec_path: Path):
    before = input_fingerprint(load_spec(spec_path))
    added = _write(spec_path.parent, "ratings-2.csv", "u3,i2,5\n")
    after = input_fingerprint(load_spec(spec_path))
    assert after != before and after.digest != before.digest
    assert after.changes_from(before) == [f"new file {added.resolve()}"]


def test_edited_data_spec_or_settings_change_it_but_init_from_does_not(spec_path: Path):
    before = input_fingerprint(load_spec(spec_path))
    _write(spec_path.parent, "ratings-1.csv", "u1,i1,5\nu2,i1,3\n")
    edited = input_fingerprint(load_spec(spec_path))
    assert edited.changes_from(before) == [f"file changed {(spec_path.parent / 'ratings-1.csv').resolve()}"]

    assert input_fingerprint(load_spec(spec_path, overrides={"rank": 5})).changes_from(edited) == [
        "the training settings changed"
    ]
    assert input_fingerprint(load_spec(spec_path), mode="joint").settings_hash != edited.settings_hash
    assert input_fingerprint(load_spec(spec_path, overrides={"init_from": "none"})) == edited

    spec_path.write_text(SPEC.replace("rank: 4", "rank: 4, rounds: 7"))
    assert "the spec changed" in input_fingerprint(load_spec(spec_path)).changes_from(edited)


def test_a_file_the_glob_does_not_match_is_no_change(spec_path: Path):
    before = input_fingerprint(load_spec(spec_path)).digest
    (spec_path.parent / "notes.txt").write_text("not data")
    assert input_fingerprint(load_spec(spec_path)).digest == before


def test_a_cache_reads_again_only_files_whose_size_or_time_moved(spec_path: Path):
    import os

    from hyperlearn.pipeline.fingerprint import HashCache

    spec = load_spec(spec_path)
    cache: HashCache = {}
    first = input_fingerprint(spec, cache=cache).digest
    assert first == input_fingerprint(spec).digest
    [(path, (size, mtime, digest))] = cache.items()
    cache[path] = (size, mtime, "0" * 64)  # what a file unchanged in size and time is taken to hold
    assert input_fingerprint(spec, cache=cache).digest != first
    os.utime(path, ns=(mtime + 1_000_000_000, mtime + 1_000_000_000))
    assert input_fingerprint(spec, cache=cache).digest == first
    assert cache[path][2] == digest
