import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hyperlearn.graphs import knn_graph
from hyperlearn.pipeline.sources.synthetic import GENRES, MALFORMED_RATINGS, generate_demo
from hyperlearn.pipeline.spec import load_spec

FILES = ("users.csv", "items.csv", "ratings.csv", "taggings.csv", "truth.json", "demo.yaml")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_demo(tmp_path_factory.mktemp("demo")).parent


@pytest.fixture(scope="module")
def truth(demo: Path) -> dict:
    return json.loads((demo / "truth.json").read_text())


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_files_and_row_counts(demo: Path, truth: dict):
    assert all((demo / name).is_file() for name in FILES)
    users, items = read_rows(demo / "users.csv"), read_rows(demo / "items.csv")
    ratings, taggings = read_rows(demo / "ratings.csv"), read_rows(demo / "taggings.csv")
    assert users[0] == ["user_id", "age", "occupation"] and len(users) == 1 + 600
    assert items[0] == ["item_id", "year", *GENRES] and len(items) == 1 + 400
    assert ratings[0] == ["user_id", "item_id", "rating", "timestamp"] and len(ratings) == 1 + 18_000 + 200 + 5
    assert taggings[0] == ["user_id", "item_id", "tag", "timestamp"] and len(taggings) == 1 + 10_000
    assert (users[1][0], items[42][0], taggings[1][2][0]) == ("u0001", "i0042", "t")
    assert truth["counts"] == {
        "users": 600, "items": 400, "tags": 60, "rating_rows": 18_205, "rating_entries": 18_000,
        "rerated": 200, "malformed": 5, "tagging_rows": 10_000,
    }


def test_same_seed_gives_identical_files(demo: Path, tmp_path: Path):
    generate_demo(tmp_path / "again")
    generate_demo(tmp_path / "other", seed=1)
    for name in FILES:
        assert (tmp_path / "again" / name).read_bytes() == (demo / name).read_bytes(), name
    assert (tmp_path / "other" / "ratings.csv").read_bytes() != (demo / "ratings.csv").read_bytes()


def test_malformed_rows_are_where_truth_says(demo: Path, truth: dict):
    data_rows = read_rows(demo / "ratings.csv")[1:]
    reported = {entry["row"]: entry for entry in truth["malformed_rows"]}
    assert [entry["reason"] for entry in truth["malformed_rows"]] == [reason for _, _, reason in MALFORMED_RATINGS]
    for number, row in enumerate(data_rows, start=1):
        well_formed = (
            len(row) == 4 and row[0] != "" and row[1] != ""
            and _is_finite_number(row[2]) and row[3].isdigit()
        )
        assert well_formed == (number not in reported), (number, row)
    defects = {reported[n]["field"]: data_rows[n - 1] for n in reported}
    assert defects["user_id"][0] == "" and defects["item_id"][1] == ""
    assert defects["rating"][2] in {"four", "inf"} and len(defects["timestamp"]) == 3


def _is_finite_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def test_rerated_pairs_are_later_and_entries_distinct(demo: Path, truth: dict):
    bad = {entry["row"] for entry in truth["malformed_rows"]}
    ratings = pd.DataFrame(
        [row for number, row in enumerate(read_rows(demo / "ratings.csv")[1:], start=1) if number not in bad],
        columns=["user_id", "item_id", "rating", "timestamp"],
    ).astype({"rating": float, "timestamp": int})
    assert ratings.groupby(["user_id", "item_id"]).ngroups == truth["counts"]["rating_entries"]
    assert ratings["timestamp"].is_monotonic_increasing
    taggings = pd.read_csv(demo / "taggings.csv")
    assert not taggings.duplicated(["user_id", "item_id", "tag"]).any()


def test_truth_reports_noise_level(truth: dict):
    assert truth["noise"] == 0.3
    assert truth["rating_noise_rmse"] == pytest.approx(0.3, abs=0.01)  # empirical noise of the kept ratings
    assert len(truth["user_cluster"]) == 600 and len(truth["item_cluster"]) == 400


def test_feature_graphs_follow_the_latent_clusters(demo: Path, truth: dict):
    users = pd.read_csv(demo / "users.csv")
    user_features = np.column_stack(
        [(users["age"] - users["age"].mean()) / users["age"].std(), pd.get_dummies(users["occupation"]).to_numpy(float)]
    )
    items = pd.read_csv(demo / "items.csv").set_index("item_id")
    item_features = ((items - items.mean()) / items.std()).to_numpy()
    for keys, features, clusters in [
        (users["user_id"], user_features, truth["user_cluster"]),
        (items.index, item_features, truth["item_cluster"]),
    ]:
        edges = knn_graph(features, k=10).tocoo()
        label = np.array([clusters[key] for key in keys])
        assert (label[edges.row] == label[edges.col]).mean() > 0.6  # chance: about 1/6


def test_spec_is_valid(demo: Path):
    spec = load_spec(demo / "demo.yaml")
    assert spec.name == "demo"
    assert [m.name for m in spec.modalities] == ["user", "item", "tag"]
    assert spec.modality("user").graph.knn.k == 10 and spec.modality("tag").graph is None
    rating, tagging = spec.relation("rating"), spec.relation("tagging")
    assert rating.modalities == ("user", "item") and rating.loss == "squared" and rating.duplicates == "last"
    assert tagging.modalities == ("user", "item", "tag") and tagging.value == 1.0 and tagging.loss == "bpr"
    assert tagging.evaluation.target == 2 and tagging.structure == "pairwise"  # the default for implicit order 3
    assert (spec.split.test, spec.split.validation, spec.split.seed) == (0.1, 0.05, 0)
    assert spec.split.group_by == ("user", "item")
    assert (spec.training.rank, spec.training.rounds) == (8, 30)


def test_small_demo_and_invalid_sizes(tmp_path: Path):
    spec = generate_demo(tmp_path, n_users=20, n_items=10, n_tags=5, n_ratings=100, n_rerated=3, n_taggings=50)
    assert len(read_rows(spec.parent / "ratings.csv")) == 1 + 100 + 3 + 5
    with pytest.raises(ValueError, match="n_ratings"):
        generate_demo(tmp_path, n_users=5, n_items=5, n_ratings=26)
