"""evaluate() per kind of relation, the headline names, and the early-stopping criterion."""

import dataclasses

import numpy as np
import pytest

from hyperlearn.config import TrainingConfig
from hyperlearn.metrics import early_stopping_criterion, evaluate, headline_names
from hyperlearn.problem import Problem, load_problem
from hyperlearn.start import initial_states


@pytest.fixture(scope="module")
def planted(planted_run):
    problem = load_problem(planted_run)
    return problem, initial_states(problem, TrainingConfig(rank=4, init="random"))


def _only_tagging(problem, **meta_changes):
    tagging = next(r for r in problem.relations if r.meta.name == "tagging")
    tagging = dataclasses.replace(tagging, meta=dataclasses.replace(tagging.meta, **meta_changes))
    return Problem(sizes=problem.sizes, relations=(tagging,), laplacians=problem.laplacians)


def test_a_ranked_relation_reports_ranking_metrics_next_to_its_baselines(planted):
    problem, states = planted
    tagging = problem.relations_of("tag")[0]
    metrics = evaluate(tagging, states, "validation")
    for name in ("ndcg@10", "recall@10", "hits@10", "mrr", "ndcg@5", "ndcg@20"):
        for prefix in ("", "popularity_", "context_popularity_"):
            assert 0.0 <= metrics[f"validation/tagging/{prefix}{name}"] <= 1.0
    assert not any("auc" in key for key in metrics)
    assert evaluate(tagging, states, "validation") == metrics, "repeatable, and the baselines are cached"


def test_a_regression_reports_rmse_and_mae_and_an_unranked_tuple_relation_its_held_out_loss(planted):
    problem, states = planted
    assert set(evaluate(problem.primary_relation(), states, "test")) == {"test/rating/rmse", "test/rating/mae"}
    unranked = _only_tagging(problem, loss="logistic", evaluation=None).relations[0]
    metrics = evaluate(unranked, states, "validation", seed=1)
    assert list(metrics) == ["validation/tagging/logistic_loss"] and np.isfinite(metrics["validation/tagging/logistic_loss"])
    assert headline_names(unranked) == ["logistic_loss"]


def test_early_stopping_ranks_when_the_primary_relation_has_an_evaluation_target(planted):
    problem, states = planted
    metrics = {"validation_loss": 0.7, "validation/tagging/ndcg@10": 0.3}
    ranked = early_stopping_criterion(_only_tagging(problem), metrics)
    assert (ranked.name, ranked.value, ranked.higher_is_better) == ("validation/tagging/ndcg@10", 0.3, True)
    assert ranked.improves_on(0.2) and not ranked.improves_on(0.3)
    by_loss = early_stopping_criterion(problem, metrics)  # the rating regression is primary
    assert (by_loss.name, by_loss.higher_is_better) == ("validation_loss", False) and by_loss.improves_on(0.8)
    assert headline_names(_only_tagging(problem).relations[0])[:3] == ["ndcg@10", "recall@10", "mrr"]
