"""Held-out quality of the published state, and the criterion early stopping reads.

A relation with an evaluation target is judged by filtered ranking of its target axis (hyperlearn.ranking):
recall@k, ndcg@k, hits@k and mrr, each next to the same metrics of two baselines on the same queries —
`popularity_*` (global frequency of the target) and `context_popularity_*` (frequency with the query's
entities) — so a model that learned nothing shows as one that does not beat them. A regression is judged by
RMSE/MAE of its clipped predictions. Any other relation of observed tuples reports only its held-out loss
against seeded sampled negatives (`<loss>_loss`), which is not a ranking metric.

Keys are "<split>/<relation>/<metric>", e.g. "validation/tagging/ndcg@10",
"validation/tagging/popularity_ndcg@10", "test/rating/rmse".
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import torch

from hyperlearn.losses import relation_loss
from hyperlearn.problem import Observations, Problem, Relation
from hyperlearn.ranking import (
    RankingQueries,
    context_popularity_scorer,
    global_popularity_scorer,
    ranking_metrics,
    ranking_queries,
)
from hyperlearn.rundir import Evaluation, ModalityState, RelationMeta
from hyperlearn.scores import candidate_scores, tuple_scores
from hyperlearn.structure import relation_blocks
from hyperlearn.value_models import value_model

FITTED_BEFORE = {"train": (), "validation": ("train",), "test": ("train", "validation")}
STOPPING_CUTOFF = 10


def rmse(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(truth, np.float64) - predicted) ** 2)))


def mae(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(truth, np.float64) - predicted)))


def _tensors(relation: Relation, states: dict[str, ModalityState]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    names = relation.meta.modalities
    factors = [torch.as_tensor(states[m].factor) for m in names]
    biases = [torch.as_tensor(states[m].biases[relation.meta.name]) for m in names]
    return factors, biases


def predict(relation: Relation, states: dict[str, ModalityState], coords: torch.Tensor) -> np.ndarray:
    """Scores of the given tuples as the value model evaluates them (regressions clipped to the train range)."""
    factors, biases = _tensors(relation, states)
    blocks = relation_blocks(relation.meta, factors[0].shape[1])
    with torch.no_grad():
        scores = tuple_scores(blocks, factors, biases, coords.cpu(), relation.train_mean()).double().numpy()
    return value_model(relation.meta).evaluated_prediction(relation.meta, scores)


@dataclass(frozen=True)
class _RankingTask:
    """A split's queries and its baselines' metrics: they depend on the data only, so are computed once."""

    queries: RankingQueries
    baselines: dict[str, float]


# Per held-out split (weakly, so a dropped problem frees them): the tasks built for it, each with the meta
# and the fitted splits it was built from, which a lookup must match by identity.
_TaskEntry = tuple[RelationMeta, tuple[Observations, ...], _RankingTask]
_ranking_tasks: "weakref.WeakKeyDictionary[Observations, list[_TaskEntry]]" = weakref.WeakKeyDictionary()


def _ranking_task(relation: Relation, split: str, evaluation: Evaluation) -> _RankingTask:
    held_out = relation.splits[split]
    fitted = tuple(relation.splits[s] for s in FITTED_BEFORE[split] if s in relation.splits)
    entries = _ranking_tasks.setdefault(held_out, [])
    for meta, known_splits, task in entries:
        if meta == relation.meta and len(known_splits) == len(fitted) and all(a is b for a, b in zip(known_splits, fitted)):
            return task
    parts = [observed.coords.cpu().numpy() for observed in fitted]
    known = np.concatenate(parts, axis=1) if parts else np.zeros((relation.meta.order, 0), dtype=np.int64)
    target, shape = evaluation.target, relation.meta.shape
    queries = ranking_queries(held_out.coords.cpu().numpy(), known, target, shape[target])
    baselines = {}
    for name, scorer in (
        ("popularity", global_popularity_scorer(known, target, shape[target])),
        ("context_popularity", context_popularity_scorer(known, target, shape)),
    ):
        baselines.update({f"{name}_{key}": value for key, value in ranking_metrics(queries, scorer, evaluation.k).items()})
    task = _RankingTask(queries, baselines)
    entries.append((relation.meta, fitted, task))
    return task


def ranking_evaluation(relation: Relation, states: dict[str, ModalityState], split: str) -> dict[str, float]:
    """Filtered ranking metrics of the model and of the popularity baselines on one split (unprefixed keys)."""
    evaluation = relation.meta.evaluation
    if evaluation is None:
        raise ValueError(f"relation {relation.meta.name!r} has no evaluation target to rank")
    task = _ranking_task(relation, split, evaluation)
    factors, biases = _tensors(relation, states)
    blocks = relation_blocks(relation.meta, factors[0].shape[1])
    offset = relation.train_mean()

    def scorer(contexts: np.ndarray) -> torch.Tensor:
        return candidate_scores(blocks, factors, biases, torch.from_numpy(contexts), evaluation.target, offset)

    return {**ranking_metrics(task.queries, scorer, evaluation.k), **task.baselines}


def evaluate(relation: Relation, states: dict[str, ModalityState], split: str, seed: int = 0) -> dict[str, float]:
    """Metrics of one relation on one split, keyed "<split>/<relation>/<metric>"."""
    observed = relation.splits[split]
    prefix = f"{split}/{relation.meta.name}"
    if observed.nnz == 0:
        return {}
    model = value_model(relation.meta)
    if relation.meta.evaluation is not None:
        metrics = ranking_evaluation(relation, states, split)
    elif model.regresses_values:
        truth = observed.values.numpy()
        scores = predict(relation, states, observed.coords)
        metrics = {"rmse": rmse(truth, scores), "mae": mae(truth, scores)}
    else:
        held_out = Relation(meta=relation.meta, splits={"train": observed.to("cpu")})
        factors, biases = _tensors(relation, states)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            loss = relation_loss(held_out, factors, biases, relation.train_mean(), 0.0, generator) / relation.meta.weight
        metrics = {f"{model.name}_loss": float(loss)}
    return {f"{prefix}/{name}": value for name, value in metrics.items()}


def headline_names(relation: Relation) -> list[str]:
    """The metrics of the primary relation that the run's summary repeats as test_<name>."""
    if relation.meta.evaluation is not None:
        k = stopping_cutoff(relation.meta.evaluation)
        return [f"ndcg@{k}", f"recall@{k}", "mrr", f"popularity_ndcg@{k}", f"context_popularity_ndcg@{k}"]
    if value_model(relation.meta).regresses_values:
        return ["rmse", "mae"]
    return [f"{value_model(relation.meta).name}_loss"]


def stopping_cutoff(evaluation: Evaluation) -> int:
    """The k early stopping ranks at: 10 when evaluated there, else the largest cut-off."""
    return STOPPING_CUTOFF if STOPPING_CUTOFF in evaluation.k else max(evaluation.k)


@dataclass(frozen=True)
class StoppingCriterion:
    """The number early stopping keeps the best round of, its metric key, and its direction."""

    name: str
    value: float
    higher_is_better: bool

    def improves_on(self, best: float) -> bool:
        """Strictly better than `best` (a NaN value never is)."""
        return self.value > best if self.higher_is_better else self.value < best


def early_stopping_criterion(problem: Problem, metrics: dict[str, float]) -> StoppingCriterion:
    """The primary relation's validation NDCG@k when it has an evaluation target, else the validation loss."""
    primary = problem.primary_relation()
    if primary.meta.evaluation is not None:
        name = f"validation/{primary.meta.name}/ndcg@{stopping_cutoff(primary.meta.evaluation)}"
        if name in metrics:
            return StoppingCriterion(name, metrics[name], higher_is_better=True)
    return StoppingCriterion("validation_loss", metrics["validation_loss"], higher_is_better=False)
