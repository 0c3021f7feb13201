"""Held-out quality of the published state: RMSE/MAE for valued relations, ROC AUC for observed tuples."""

from __future__ import annotations

import numpy as np
import scipy.stats
import torch

from hyperlearn.losses import corrupt, tuple_scores
from hyperlearn.rundir import ModalityState
from hyperlearn.problem import Relation

EVALUATION_NEGATIVES = 4


def rmse(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(truth, np.float64) - predicted) ** 2)))


def mae(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(truth, np.float64) - predicted)))


def roc_auc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """Probability that a random positive outranks a random negative (ties count half): Mann–Whitney U."""
    ranks = scipy.stats.rankdata(np.concatenate([positive_scores, negative_scores]))
    n_pos, n_neg = len(positive_scores), len(negative_scores)
    u = ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def predict(relation: Relation, states: dict[str, ModalityState], coords: torch.Tensor) -> np.ndarray:
    """Scores for the given tuples; squared-loss predictions are clipped to the training value range."""
    names = relation.meta.modalities
    factors = [torch.as_tensor(states[m].factor) for m in names]
    biases = [torch.as_tensor(states[m].biases[relation.meta.name]) for m in names]
    with torch.no_grad():
        scores = tuple_scores(factors, biases, coords.cpu(), relation.train_mean()).double().numpy()
    if relation.meta.loss == "squared" and relation.meta.value_min is not None:
        scores = np.clip(scores, relation.meta.value_min, relation.meta.value_max)
    return scores


def evaluate(relation: Relation, states: dict[str, ModalityState], split: str, seed: int = 0) -> dict[str, float]:
    """Metrics of one relation on one split, keyed "<split>/<relation>/<metric>"."""
    observed = relation.splits[split]
    prefix = f"{split}/{relation.meta.name}"
    if observed.nnz == 0:
        return {}
    scores = predict(relation, states, observed.coords)
    if relation.meta.loss == "squared":
        truth = observed.values.numpy()
        return {f"{prefix}/rmse": rmse(truth, scores), f"{prefix}/mae": mae(truth, scores)}
    generator = torch.Generator().manual_seed(seed)
    negatives = corrupt(observed.coords.cpu(), relation.meta.shape, EVALUATION_NEGATIVES, generator)
    return {f"{prefix}/auc": roc_auc(scores, predict(relation, states, negatives))}
