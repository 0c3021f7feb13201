import numpy as np
import torch

from benchmarks.ranking_peers import (
    BprSettings,
    axis_popularity_scorer,
    choose_mix,
    mixed_scorer,
    train_bpr_peer,
)
from hyperlearn.ranking import global_popularity_scorer, ranking_metrics, ranking_queries

SIZES = (40, 30, 20)  # users, items, tags
TARGET = 2


def planted_tags(seed: int, posts: int) -> np.ndarray:
    """(3, n) taggings whose tag depends on the user's and the item's group: a pairwise (PITF) affinity."""
    rng = np.random.default_rng(seed)
    users, items = rng.integers(SIZES[0], size=posts), rng.integers(SIZES[1], size=posts)
    tags = (users % 4) * 5 + (items % 5)
    return np.stack([users, items, tags])


def held_out_ndcg(scorer, train: np.ndarray, held_out: np.ndarray) -> float:
    queries = ranking_queries(held_out, train, TARGET, SIZES[TARGET])
    return ranking_metrics(queries, scorer, [10])["ndcg@10"]


def test_pitf_and_cp_learn_a_planted_affinity_deterministically():
    train, validation, test = planted_tags(0, 1500), planted_tags(1, 200), planted_tags(2, 200)
    popularity = held_out_ndcg(global_popularity_scorer(train, TARGET, SIZES[TARGET]), train, test)
    settings = BprSettings(dim=16, learning_rate=0.02, epochs=8, patience=3)
    for kind in ("pitf", "cp"):
        validate = lambda scorer: held_out_ndcg(scorer, train, validation)  # noqa: E731
        result = train_bpr_peer(kind, train, SIZES, TARGET, validate, settings, seed=3)
        again = train_bpr_peer(kind, train, SIZES, TARGET, validate, settings, seed=3)
        assert result.history == again.history and 1 <= result.best_epoch <= len(result.history)
        assert result.history[result.best_epoch - 1] == max(result.history)
        contexts = test[:, :7].copy()
        torch.testing.assert_close(result.scorer(contexts), again.scorer(contexts))
        assert result.scorer(contexts).shape == (7, SIZES[TARGET])
        assert held_out_ndcg(result.scorer, train, test) > popularity + 0.2


def test_shared_tables_score_head_and_tail_with_one_embedding():
    triples = np.array([[0, 1, 2, 3], [0, 0, 1, 1], [1, 2, 3, 0]])
    result = train_bpr_peer("cp", triples, (4, 2, 4), 2, lambda scorer: 0.0, BprSettings(dim=4, epochs=1), tables=(0, 1, 0))
    assert result.scorer(triples).shape == (4, 4)


def test_axis_popularity_and_the_mix_chosen_on_validation():
    train = planted_tags(0, 1500)
    per_user = axis_popularity_scorer(train, TARGET, SIZES, [0])
    per_item = axis_popularity_scorer(train, TARGET, SIZES, [1])
    contexts = np.array([[3, 5], [7, 2], [0, 0]])
    counts = np.bincount(train[2][train[0] == 3], minlength=SIZES[2])
    assert int(per_user(contexts)[0].argmax()) == int(counts.argmax())
    torch.testing.assert_close(mixed_scorer(per_user, per_item, 1.0)(contexts), per_user(contexts))
    validation = planted_tags(1, 200)
    weight, metrics = choose_mix(per_user, per_item, lambda scorer: held_out_ndcg(scorer, train, validation))
    assert metrics[weight] == max(metrics.values()) and 0.0 < weight < 1.0  # the tag needs both user and item
