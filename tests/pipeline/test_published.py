"""Scores from the published files alone: equal to the trained model's own, and the rankings built on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import scipy.special
import torch

from hyperlearn.metrics import predict
from hyperlearn.pipeline.published import RECOMMENDATION_SCHEMA, open_version, read_queries, top_k
from hyperlearn.problem import load_problem, with_validation_in_training
from tests.pipeline.handmade import write_handmade_version
from tests.pipeline.trained import SIZES, entity_key, write_trained_version

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return write_trained_version(tmp_path_factory.mktemp("published"))


@pytest.fixture(scope="module")
def version(trained):
    return open_version(trained[0].path)


def _keys(modality: str, ids: np.ndarray) -> np.ndarray:
    return np.array([entity_key(modality, e) for e in ids], dtype=object)


def _all_tuples(run, relation):
    """Every split's tuples plus random ones the model never saw."""
    coords = np.hstack([run.read_relation_split(relation.meta.name, s).coords for s in ("train", "validation", "test")])
    rng = np.random.default_rng(0)
    unseen = np.stack([rng.integers(n, size=200) for n in relation.meta.shape])
    return np.hstack([coords, unseen])


@pytest.mark.parametrize(
    ("structure", "refit"),
    [("cp", False), ("cp", True), ("pairwise", False)],
)
def test_published_scores_are_the_models_own_scores(tmp_path, structure, refit):
    run, result = write_trained_version(tmp_path, structure=structure, refit=refit)
    version = open_version(run.path)
    problem = load_problem(run)
    if refit:  # the refit model was fitted to training + validation entries, and its offset is their mean
        problem = with_validation_in_training(problem)
    for relation in problem.relations:
        coords = _all_tuples(run, relation)
        scoring = version.relations[relation.meta.name]
        published = version.score(
            relation.meta.name,
            {label: _keys(m, coords[axis]) for axis, (label, m) in enumerate(zip(scoring.labels, scoring.modalities))},
        )
        model = predict(relation, result.states, torch.as_tensor(coords))
        if relation.meta.loss == "logistic":
            model = scipy.special.expit(model)
        np.testing.assert_allclose(published, model, rtol=1e-5, atol=1e-5, err_msg=relation.meta.name)


def test_an_unknown_key_scores_as_a_zero_embedding_and_zero_bias(version):
    known = version.score("rating", {"user": ["u3"], "item": ["i5"]})
    unknown_item = version.score("rating", {"user": ["u3"], "item": ["never-seen"]})
    user_bias = version.biases("rating", "user")[3]
    expected = np.clip(version.relations["rating"].offset + user_bias, *version.relations["rating"].clip)
    assert unknown_item[0] == pytest.approx(expected, rel=1e-6)
    assert known[0] != unknown_item[0]


def test_axes_are_named_by_modality_or_by_axis_name_where_the_modality_repeats(version):
    forward = version.score("follows", {"follower": ["u1"], "followee": ["u2"]})
    backward = version.score("follows", {"follower": ["u2"], "followee": ["u1"]})
    assert forward.shape == (1,) and 0 < forward[0] < 1
    assert forward[0] == pytest.approx(backward[0])  # the CP block and the one bias vector are symmetric
    with pytest.raises(KeyError, match=r"no axis 'user'.*\['follower', 'followee'\]"):
        version.score("follows", {"user": ["u1"], "followee": ["u2"]})
    with pytest.raises(ValueError, match=r"exactly \['user', 'item'\]"):
        version.score("rating", {"user": ["u1"]})


def _brute_force_top(version, relation, target, queries, k, seen=frozenset()):
    """Every candidate scored one tuple at a time through `score`, ranked by the raw score."""
    scoring = version.relations[relation]
    axis = scoring.axis(target)
    candidates = version.keys(scoring.modalities[axis]).to_numpy()
    tops = []
    for row in range(len(next(iter(queries.values())))):
        tuples = {label: np.repeat(keys[row], len(candidates)) for label, keys in queries.items()}
        raw = version.score(relation, {**tuples, target: candidates})
        if scoring.link == "sigmoid":
            raw = scipy.special.logit(raw)
        order = [c for c in np.lexsort((np.arange(len(raw)), -raw)) if (row, c) not in seen]
        tops.append([candidates[c] for c in order[:k]])
    return tops


def _recommended(table: pa.Table, n_queries: int) -> list[list[str]]:
    frame = table.to_pandas()
    return [frame.loc[frame["query"] == q].sort_values("rank")["key"].tolist() for q in range(n_queries)]


def test_recommend_ranks_every_candidate_by_the_model_score(version):
    queries = {"user": _keys("user", np.arange(0, 240, 30)), "item": _keys("item", np.arange(0, 160, 20))}
    result = version.recommend("tagging", "tag", queries, k=5)
    assert result.table.schema == RECOMMENDATION_SCHEMA
    assert result.unknown == {"user": 0, "item": 0}
    frame = result.table.to_pandas()
    assert frame.groupby("query")["rank"].apply(list).tolist() == [[1, 2, 3, 4, 5]] * 8
    assert (frame.groupby("query")["score"].diff().dropna() <= 0).all()
    assert _recommended(result.table, 8) == _brute_force_top(version, "tagging", "tag", queries, 5)
    scores = version.score("tagging", {**queries, "tag": frame.groupby("query")["key"].first().to_numpy()})
    np.testing.assert_allclose(frame.loc[frame["rank"] == 1, "score"], scores, rtol=1e-5)


def test_recommend_with_exclude_seen_leaves_out_training_and_validation_tuples(trained, version):
    run, _ = trained
    users = np.arange(0, 240, 8)
    coords = np.hstack([run.read_relation_split("rating", s).coords for s in ("train", "validation")])
    seen = {(row, c) for row, u in enumerate(users) for c in coords[1, coords[0] == u]}
    queries = {"user": _keys("user", users)}
    result = version.recommend("rating", "item", queries, k=10, exclude_seen=True)
    assert _recommended(result.table, len(users)) == _brute_force_top(version, "rating", "item", queries, 10, seen)
    plain = version.recommend("rating", "item", queries, k=10)
    assert plain.table.num_rows == result.table.num_rows == 10 * len(users)
    assert plain.table.column("key").to_pylist() != result.table.column("key").to_pylist()


def test_recommend_returns_fewer_rows_when_seen_tuples_exhaust_the_candidates(version):
    result = version.recommend("rating", "item", {"user": ["u0"]}, k=SIZES["item"] + 5, exclude_seen=True)
    assert 0 < result.table.num_rows < SIZES["item"]
    assert result.table.column("rank").to_pylist() == list(range(1, result.table.num_rows + 1))
    assert version.recommend("rating", "item", {"user": []}, k=3, exclude_seen=True).table.num_rows == 0


def test_recommend_answers_unknown_query_keys_and_counts_them(version):
    queries = {"user": ["u1", "nobody", "u1"], "item": ["nothing", "i2", "i2"]}
    result = version.recommend("tagging", "tag", queries, k=3)
    assert result.unknown == {"user": 1, "item": 1}
    assert _recommended(result.table, 3) == _brute_force_top(version, "tagging", "tag", queries, 3)


def test_recommend_over_a_repeated_modality_targets_one_axis(version):
    result = version.recommend("follows", "followee", {"follower": ["u7"]}, k=4)
    assert _recommended(result.table, 1) == _brute_force_top(version, "follows", "followee", {"follower": ["u7"]}, 4)


def _cosine_top(version, modality, key, k, to):
    vector = version.embeddings(modality)[version.entity_ids(modality, [key])[0]]
    candidates = version.embeddings(to)
    similarity = candidates @ vector / (np.linalg.norm(candidates, axis=1) * np.linalg.norm(vector))
    order = [c for c in np.argsort(-similarity, kind="stable") if not (to == modality and version.keys(to)[c] == key)]
    return [version.keys(to)[c] for c in order[:k]], similarity[order[:k]]


@pytest.mark.parametrize(("modality", "key", "to"), [("item", "i4", None), ("user", "u9", "item")])
def test_neighbors_are_the_highest_cosine_similarities(version, modality, key, to):
    table = version.neighbors(modality, key, k=6, to=to)
    keys, similarity = _cosine_top(version, modality, key, 6, to or modality)
    assert table.column("key").to_pylist() == keys
    assert table.column("rank").to_pylist() == list(range(1, 7))
    np.testing.assert_allclose(table.column("similarity").to_numpy(), similarity, rtol=1e-5)


def test_neighbors_of_an_unknown_key_or_modality_fail_by_name(version):
    with pytest.raises(KeyError, match="item: key 'zzz' is not in this version's catalog"):
        version.neighbors("item", "zzz")
    with pytest.raises(KeyError, match="no modality 'song'"):
        version.neighbors("song", "x")


def test_open_version_follows_latest_and_rejects_a_folder_without_scoring(trained, tmp_path):
    run, _ = trained
    (tmp_path / "latest").symlink_to(run.path)
    assert open_version(tmp_path / "latest").path == run.path.resolve()
    with pytest.raises(FileNotFoundError, match="no scoring.json"):
        open_version(tmp_path)


def test_query_files_name_their_columns_and_rows(tmp_path):
    good = tmp_path / "q.csv"
    good.write_text("item,user\ni1,NA\ni2,007\n")
    assert {k: list(v) for k, v in read_queries(good, ["user", "item"]).items()} == {
        "user": ["NA", "007"], "item": ["i1", "i2"]
    }
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item\nu1,i1\nu2,\n")
    with pytest.raises(ValueError, match=r"bad.csv: row 2, column 'item': empty key"):
        read_queries(bad, ["user", "item"])
    with pytest.raises(ValueError, match=r"columns \['user', 'item'\], expected exactly \['user'\]"):
        read_queries(bad, ["user"])


def _readme_sql(version) -> list[str]:
    """The README's DuckDB recipe, pointed at `version`: its path, rank, the rating's offset and clip, and keys
    of this version in place of the demo's."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    recipe = readme.split("```sql\n", 1)[1].split("```", 1)[0]
    scoring = version.relations["rating"]
    for demo, here in [
        ("out/demo/latest", str(version.path)), ("FLOAT[8]", f"FLOAT[{version.description['rank']}]"),
        ("3.437", repr(scoring.offset)), ("greatest(-0.414, least(7.46,", f"greatest({scoring.clip[0]!r}, least({scoring.clip[1]!r},"),
        ("'u0001'", "'u1'"), ("'i0002'", "'i2'"),
    ]:
        assert demo in recipe
        recipe = recipe.replace(demo, here)
    return [statement for statement in recipe.split(";") if statement.strip()]


def test_the_readme_duckdb_recipe_reproduces_scores_and_neighbors(version):
    duckdb = pytest.importorskip("duckdb")
    rating, neighbours = _readme_sql(version)
    [[score]] = duckdb.sql(rating).fetchall()
    assert score == pytest.approx(version.score("rating", {"user": ["u1"], "item": ["i2"]})[0], rel=1e-5)
    found = duckdb.sql(neighbours).fetchnumpy()
    table = version.neighbors("item", "i2", k=10)
    assert list(found["key"]) == table.column("key").to_pylist()
    np.testing.assert_allclose(found["similarity"], table.column("similarity").to_numpy(), rtol=1e-5)


@pytest.fixture(scope="module")
def pairwise_version(tmp_path_factory):
    """A version whose tagging relation is pairwise (user·tag on columns 0–2, item·tag on 3–4)."""
    return open_version(write_handmade_version(tmp_path_factory.mktemp("pairwise")).path)


def test_a_pairwise_score_sums_its_blocks_products(pairwise_version):
    user, item, tag = (pairwise_version.embeddings(m) for m in ("user", "item", "tag"))
    biases = sum(pairwise_version.biases("tagging", m)[e] for m, e in (("user", 1), ("item", 2), ("tag", 3)))
    raw = biases + user[1, :3] @ tag[3, :3] + item[2, 3:] @ tag[3, 3:]
    published = pairwise_version.score("tagging", {"user": ["u1"], "item": ["i2"], "tag": ["t3"]})
    assert published[0] == pytest.approx(scipy.special.expit(raw), rel=1e-6)


@pytest.mark.parametrize("target", ["tag", "user"])  # ranking users, the item·tag block is the same for all of them
def test_recommend_over_pairwise_blocks_matches_the_scores(pairwise_version, target):
    queries = {label: [f"{label[0]}{e}" for e in (0, 3, 1)] for label in ("user", "item", "tag") if label != target}
    result = pairwise_version.recommend("tagging", target, queries, k=3)
    assert _recommended(result.table, 3) == _brute_force_top(pairwise_version, "tagging", target, queries, 3)


@pytest.mark.parametrize(("n_columns", "k"), [(1, 3), (7, 3), (300, 5), (1000, 200)])
def test_top_k_is_the_exact_per_row_ranking(n_columns, k):
    rng = np.random.default_rng(n_columns)
    scores = rng.integers(-20, 20, size=(9, n_columns)).astype(np.float32)  # many ties
    scores[rng.random(scores.shape) < 0.3] = -np.inf
    scores[0] = -np.inf  # a row with nothing left
    rows, columns, ranks, values = top_k(scores, k)
    for row in range(len(scores)):
        expected = [c for c in np.lexsort((np.arange(n_columns), -scores[row])) if np.isfinite(scores[row, c])][:k]
        assert columns[rows == row].tolist() == expected
        assert ranks[rows == row].tolist() == list(range(1, len(expected) + 1))
        np.testing.assert_array_equal(values[rows == row], scores[row, expected])
