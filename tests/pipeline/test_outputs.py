"""The flow's plain helpers: the staging folder's life cycle, strict-JSON conversion, and what a version holds
for scoring (biases, scoring.json)."""

from __future__ import annotations

import errno
import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from hyperlearn.pipeline.outputs import json_ready, staged_run_dir
from tests.pipeline.handmade import handmade_states, write_handmade_version


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


def test_training_outputs_publish_biases_and_a_scoring_description(tmp_path):
    run = write_handmade_version(tmp_path)
    files = [p for p in run.path.rglob("*") if p.is_file()]
    biases = run.path / "biases/relation=tagging/modality=tag/part-0.parquet"
    assert biases in files and run.path / "scoring.json" in files
    table = pq.read_table(biases)
    assert table.schema.names == ["entity_id", "key", "bias"]
    assert [str(t) for t in table.schema.types] == ["int64", "string", "float"]
    assert table.column("key").to_pylist() == ["t0", "t1", "t2", "t3"]
    assert table.schema.metadata[b"hyperlearn.relation"] == b"tagging"
    assert len(list(run.path.glob("biases/*/*/part-0.parquet"))) == 5

    scoring = json.loads((run.path / "scoring.json").read_text())
    assert scoring["rank"] == 5 and "zero embedding row" in scoring["formula"]
    assert scoring["embeddings"]["tag"] == "embeddings/modality=tag/part-0.parquet"
    rating, tagging = scoring["relations"]["rating"], scoring["relations"]["tagging"]
    assert (rating["offset"], rating["clip"], rating["link"]) == (1.5, [1.0, 5.0], "identity")
    assert rating["blocks"] == [{"axes": [0, 1], "start": 0, "stop": 5}]
    assert (tagging["offset"], tagging["clip"], tagging["link"]) == (0.0, None, "sigmoid")
    assert tagging["blocks"] == [{"axes": [0, 2], "start": 0, "stop": 3}, {"axes": [1, 2], "start": 3, "stop": 5}]
    assert tagging["biases"][2] == "biases/relation=tagging/modality=tag/part-0.parquet"
    assert (tagging["modalities"], tagging["labels"]) == (["user", "item", "tag"], ["user", "item", "tag"])


def test_a_refit_model_is_offset_by_the_mean_of_training_and_validation_values(tmp_path):
    run = write_handmade_version(tmp_path, refit=True)
    assert json.loads((run.path / "scoring.json").read_text())["relations"]["rating"]["offset"] == pytest.approx(8 / 3)


def test_non_finite_biases_are_never_published(tmp_path):
    with pytest.raises(ValueError, match="biases contain NaN or infinite values"):
        write_handmade_version(tmp_path, handmade_states(bias=math.nan))
