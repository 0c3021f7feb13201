"""The flow's plain helpers: the staging folder's life cycle and strict-JSON conversion."""

from __future__ import annotations

import errno
import math

import numpy as np
import pytest

from hyperlearn.pipeline.outputs import json_ready, staged_run_dir


def test_a_staging_folder_is_removed_when_the_run_fails(tmp_path):
    with pytest.raises(RuntimeError), staged_run_dir(tmp_path / "demo", "v1") as run:
        assert run.path == tmp_path / "demo" / ".staging-v1" and run.path.is_dir()
        (run.path / "half-written.npz").write_bytes(b"...")
        raise RuntimeError("step failed")
    assert list((tmp_path / "demo").iterdir()) == []


def test_a_published_staging_folder_is_left_where_it_went(tmp_path):
    with staged_run_dir(tmp_path / "demo", "v1") as run:
        run.metrics.write_text("{}")
        run.path.rename(tmp_path / "demo" / "v1")
    assert [p.name for p in (tmp_path / "demo").iterdir()] == ["v1"]


def test_a_full_disk_names_the_run_and_leaves_nothing_half_written(tmp_path):
    with pytest.raises(OSError, match=r"no space left on the device while writing .*\.staging-v1.*nothing published"):
        with staged_run_dir(tmp_path / "demo", "v1") as run:
            (run.path / "part.npz").write_bytes(b"...")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list((tmp_path / "demo").iterdir()) == []


def test_a_version_is_staged_only_once(tmp_path):
    with staged_run_dir(tmp_path, "v1"), pytest.raises(FileExistsError), staged_run_dir(tmp_path, "v1"):
        pass


def test_json_ready_turns_numpy_and_non_finite_values_into_plain_json():
    value = {"rmse": np.float32(0.5), "auc": math.nan, "rows": [np.int64(3), math.inf], 7: (1.0,)}
    assert json_ready(value) == {"rmse": 0.5, "auc": None, "rows": [3, None], "7": [1.0]}
