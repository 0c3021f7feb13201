"""Filtered ranking metrics against a brute-force reference: ties, filtering, batching, unseen entities."""

import math

import numpy as np
import pytest
import torch

from hyperlearn.ranking import (
    context_popularity_scorer,
    global_popularity_scorer,
    query_metrics,
    ranking_metrics,
    ranking_queries,
)

SHAPE = (5, 4, 12)  # user × item × tag, tags ranked
KS = (1, 3, 5)


def _data(seed):
    rng = np.random.default_rng(seed)
    held_out = np.stack([rng.integers(n, size=40) for n in SHAPE])
    known = np.stack([rng.integers(n, size=60) for n in SHAPE])
    known[2] = np.minimum(known[2], 7)  # tags 8–11 never seen in training: still candidates
    table = torch.from_numpy(rng.integers(0, 3, size=SHAPE).astype(np.float64))  # few values: many ties
    return held_out, known, table


def _brute_force(held_out, known, table, ks):
    """Each query's candidate list in the pessimistic order, metrics read straight off the list."""
    per_query = {}
    for u, i in sorted({(u, i) for u, i in held_out[:2].T}):
        positives = {t for uu, ii, t in held_out.T if (uu, ii) == (u, i)}
        filtered = {t for uu, ii, t in known.T if (uu, ii) == (u, i)} - positives
        candidates = [t for t in range(SHAPE[2]) if t not in filtered]
        ordered = sorted(candidates, key=lambda t: (-table[u, i, t].item(), t in positives, t))
        flags = [t in positives for t in ordered]
        first = flags.index(True) + 1
        row = {"mrr": 1 / first}
        for k in ks:
            found = sum(flags[:k])
            ideal = sum(1 / math.log2(r + 1) for r in range(1, min(k, len(positives)) + 1))
            row[f"recall@{k}"] = found / len(positives)
            row[f"ndcg@{k}"] = sum(1 / math.log2(r + 1) for r, hit in enumerate(flags[:k], 1) if hit) / ideal
            row[f"hits@{k}"] = float(found > 0)
        per_query[(u, i)] = row
    return {name: np.mean([row[name] for row in per_query.values()]) for name in next(iter(per_query.values()))}


def _table_scorer(table):
    return lambda contexts: table[contexts[0], contexts[1]]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cells_per_batch", [12, 50, 10_000])
def test_ranking_metrics_match_the_brute_force_reference(seed, cells_per_batch):
    held_out, known, table = _data(seed)
    queries = ranking_queries(held_out, known, target=2, candidates=SHAPE[2])
    metrics = ranking_metrics(queries, _table_scorer(table), KS, cells_per_batch=cells_per_batch)
    expected = _brute_force(held_out, known, table, KS)
    assert metrics.keys() == expected.keys()
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value), name


def test_a_constant_model_ranks_its_positives_last():
    held_out, known, _ = _data(0)
    queries = ranking_queries(held_out, known, target=2, candidates=SHAPE[2])
    metrics = ranking_metrics(queries, lambda contexts: torch.zeros(contexts.shape[1], SHAPE[2]), KS)
    expected = _brute_force(held_out, known, torch.zeros(SHAPE), KS)
    assert metrics["mrr"] == pytest.approx(expected["mrr"]) and metrics["mrr"] < 0.2
    assert metrics["hits@1"] == 0.0


def test_nan_scores_rank_last():
    held_out, known, table = _data(1)
    queries = ranking_queries(held_out, known, target=2, candidates=SHAPE[2])
    metrics = ranking_metrics(queries, lambda contexts: torch.full((contexts.shape[1], SHAPE[2]), math.nan), KS)
    assert metrics["hits@1"] == 0.0


def test_queries_are_distinct_contexts_and_known_positives_are_filtered_unless_held_out():
    held_out = np.array([[0, 0, 1], [2, 2, 0], [3, 5, 3]])
    known = np.array([[0, 0, 1, 4], [2, 2, 1, 0], [3, 1, 2, 0]])
    queries = ranking_queries(held_out, known, target=2, candidates=6)
    assert queries.size == 2
    np.testing.assert_array_equal(queries.contexts[:2], [[0, 1], [2, 0]])
    assert queries.positives[0].indices.tolist() == [3, 5] and queries.positives[1].indices.tolist() == [3]
    assert queries.known[0].indices.tolist() == [1, 3]
    assert queries.known[1].nnz == 0, "(1, 1) is another context; (4, 0) no query"


def test_ndcg_uses_the_ideal_dcg_of_min_k_and_the_number_of_positives():
    metrics = query_metrics(np.array([0, 0, 0, 1]), np.array([1.0, 4.0, 9.0, 2.0]), 2, ks=[2])
    assert metrics["ndcg@2"][0] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert metrics["ndcg@2"][1] == pytest.approx((1 / math.log2(3)) / 1)
    assert metrics["recall@2"].tolist() == [1 / 3, 1.0] and metrics["mrr"].tolist() == [1.0, 0.5]


def test_popularity_baselines_score_by_training_frequency():
    train = np.array([[0, 0, 1, 1, 1], [0, 1, 0, 0, 1], [2, 2, 1, 2, 0]])
    contexts = np.array([[0, 1], [1, 0], [0, 0]])
    popular = global_popularity_scorer(train, 2, 4)(contexts)
    np.testing.assert_array_equal(popular.numpy(), [[1, 1, 3, 0], [1, 1, 3, 0]])
    context = context_popularity_scorer(train, 2, (2, 2, 4))(contexts).numpy()
    # user 0 tagged only tag 2; item 1 carries tags 2 and 0; user 1 tags 1, 2, 0; item 0 tags 2, 1, 2.
    user0, item1 = np.array([0, 0, 1, 0]), np.array([0.5, 0, 0.5, 0])
    user1, item0 = np.array([1, 1, 1, 0]) / 3, np.array([0, 1, 2, 0]) / 3
    global_share = np.array([1, 1, 3, 0]) / 5
    np.testing.assert_allclose(context[0], 0.9 * (user0 + item1) / 2 + 0.1 * global_share)
    np.testing.assert_allclose(context[1], 0.9 * (user1 + item0) / 2 + 0.1 * global_share)
