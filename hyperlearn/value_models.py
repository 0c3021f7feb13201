"""How a relation's scores meet its data: the value models, one registry keyed by `RelationMeta.loss`.

A value model says whether the relation regresses its values (then the score has the train mean as offset and
is clipped to the train range when evaluated) or separates its observed tuples from sampled unobserved ones
(hyperlearn.negatives), and what the per-positive fit term is:

  squared   (y − s)²                                                   regression on the values
  logistic  softplus(−s⁺) + mean over its negatives softplus(s⁻)      observed vs unobserved (a classifier)
  bpr       mean over its negatives −log σ(s⁺ − s⁻)                   each positive ranked above its negatives
            (Rendle et al., UAI 2009)
  softmax   −log softmax over {positive, its negatives} of s − log Q   sampled softmax over the corrupted axis,
            with the log-Q correction for popularity-sampled negatives (Bengio & Senécal 2008; Yi et al. 2019)

Every other module asks the registry (`value_model(meta)`) instead of comparing loss names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from hyperlearn.negatives import SampledNegatives, corrupted_axes
from hyperlearn.rundir import RelationMeta


class ValueModel(ABC):
    """The fit term of one kind of relation; `fit` is the mean over positives of the per-positive loss."""

    name: ClassVar[str]
    regresses_values: ClassVar[bool] = False

    def offset(self, train_values: torch.Tensor) -> float:
        """The score's global offset μ: the train mean for regressions, 0 for observed tuples."""
        if not self.regresses_values or train_values.numel() == 0:
            return 0.0
        return float(train_values.double().mean())

    def check(self, meta: RelationMeta) -> None:
        """Raise ValueError naming the relation when its meta does not suit this value model."""

    def evaluated_prediction(self, meta: RelationMeta, scores: np.ndarray) -> np.ndarray:
        """What held-out metrics compare with the data: the scores themselves, unless the model says otherwise."""
        return scores

    @abstractmethod
    def fit(
        self,
        scores: torch.Tensor,
        values: torch.Tensor,
        negative_scores: torch.Tensor | None,
        negatives: SampledNegatives | None,
    ) -> torch.Tensor:
        """Mean loss over the n positives: `scores`, `values` (n,), `negative_scores` (count, n) aligned with
        their positives (None for regressions; −inf where a shared candidate is the positive itself, which
        every ranking model then ignores)."""


class Squared(ValueModel):
    name = "squared"
    regresses_values = True

    def evaluated_prediction(self, meta: RelationMeta, scores: np.ndarray) -> np.ndarray:
        """Predictions clipped to the training value range (a rating beyond the scale is never better)."""
        if meta.value_min is None or meta.value_max is None:
            return scores
        return np.clip(scores, meta.value_min, meta.value_max)

    def fit(self, scores, values, negative_scores, negatives):
        return (values - scores).pow(2).mean()


class Logistic(ValueModel):
    name = "logistic"

    def fit(self, scores, values, negative_scores, negatives):
        return F.softplus(-scores).mean() + F.softplus(negative_scores).mean()


class BPR(ValueModel):
    name = "bpr"

    def fit(self, scores, values, negative_scores, negatives):
        return -F.logsigmoid(scores[None, :] - negative_scores).mean()


class SampledSoftmax(ValueModel):
    name = "softmax"

    def check(self, meta: RelationMeta) -> None:
        if len(corrupted_axes(meta)) != 1:
            raise ValueError(
                f"relation {meta.name!r}: loss softmax normalises over one axis, but negatives corrupt axes "
                f"{list(corrupted_axes(meta))}; set negatives.axes to one axis or give it an evaluation target"
            )

    def fit(self, scores, values, negative_scores, negatives):
        positive = scores - negatives.positive_log_q[0].to(scores.dtype)
        negative = negative_scores - negatives.log_q.to(scores.dtype)
        logits = torch.cat([positive[None, :], negative], dim=0)
        return -torch.log_softmax(logits, dim=0)[0].mean()


VALUE_MODELS: dict[str, ValueModel] = {model.name: model for model in (Squared(), Logistic(), BPR(), SampledSoftmax())}


def value_model(meta: RelationMeta) -> ValueModel:
    """The value model of a relation, checked against its meta."""
    try:
        model = VALUE_MODELS[meta.loss]
    except KeyError:
        raise ValueError(f"relation {meta.name!r}: unknown loss {meta.loss!r}; known: {sorted(VALUE_MODELS)}") from None
    model.check(meta)
    return model
