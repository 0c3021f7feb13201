"""The value-model registry: each loss's fit term against its definition, and its checks."""

import math

import numpy as np
import pytest
import torch

from hyperlearn.negatives import sample_negatives
from hyperlearn.rundir import Evaluation, Negatives, RelationMeta
from hyperlearn.value_models import VALUE_MODELS, value_model

SCORES = torch.tensor([2.0, -1.0], dtype=torch.float64)
NEGATIVE_SCORES = torch.tensor([[0.5, -2.0], [1.0, 0.0], [3.0, -1.5]], dtype=torch.float64)


def _meta(loss, **changes):
    return RelationMeta("r", ("u", "i", "t"), (3, 3, 4), loss, evaluation=Evaluation(2), **changes)


def _negatives(meta, seed=0):
    positives = torch.tensor([[0, 1], [1, 2], [0, 3]])
    return sample_negatives(meta, positives, positives, torch.Generator().manual_seed(seed))


def test_the_registry_knows_every_loss_of_the_relation_format_and_names_an_unknown_one():
    assert set(VALUE_MODELS) == {"squared", "logistic", "bpr", "softmax"}
    assert [name for name, model in VALUE_MODELS.items() if model.regresses_values] == ["squared"]
    with pytest.raises(ValueError, match="relation 'r'.*'hinge'"):
        value_model(_meta("hinge"))


def test_squared_regresses_values_around_the_train_mean_and_clips_to_the_train_range():
    model = value_model(_meta("squared", value_min=1.0, value_max=5.0))
    values = torch.tensor([3.0, 1.0], dtype=torch.float64)
    assert model.offset(values) == 2.0
    assert model.fit(SCORES, values, None, None).item() == pytest.approx((1 + 4) / 2)
    np.testing.assert_array_equal(model.evaluated_prediction(_meta("squared", value_min=1.0, value_max=5.0), np.array([0.0, 6.0, 2.5])), [1.0, 5.0, 2.5])


def test_logistic_separates_positives_from_negatives():
    model = value_model(_meta("logistic"))
    softplus = lambda x: math.log1p(math.exp(x))
    expected = (softplus(-2.0) + softplus(1.0)) / 2 + sum(softplus(x) for x in NEGATIVE_SCORES.flatten().tolist()) / 6
    assert model.offset(SCORES) == 0.0
    assert model.fit(SCORES, None, NEGATIVE_SCORES, _negatives(_meta("logistic"))).item() == pytest.approx(expected)


def test_bpr_ranks_each_positive_above_its_own_negatives():
    model = value_model(_meta("bpr"))
    expected = np.mean([
        -math.log(1 / (1 + math.exp(-(SCORES[e] - NEGATIVE_SCORES[c, e]).item()))) for c in range(3) for e in range(2)
    ])
    assert model.fit(SCORES, None, NEGATIVE_SCORES, _negatives(_meta("bpr"))).item() == pytest.approx(expected)


@pytest.mark.parametrize("distribution", ["uniform", "popularity"])
def test_softmax_is_the_sampled_softmax_with_log_q_correction(distribution):
    meta = _meta("softmax", negatives=Negatives(count=3, distribution=distribution))
    negatives = _negatives(meta)
    log_q = negatives.log_q.double().view(3, 2)
    positive_log_q = negatives.positive_log_q.double().view(3, 2)[0]
    expected = []
    for e in range(2):
        logits = [SCORES[e] - positive_log_q[e]] + [NEGATIVE_SCORES[c, e] - log_q[c, e] for c in range(3)]
        logits = torch.stack(logits)
        expected.append(-(logits[0] - torch.logsumexp(logits, 0)).item())
    fitted = value_model(meta).fit(SCORES, None, NEGATIVE_SCORES, negatives).item()
    assert fitted == pytest.approx(np.mean(expected))
    assert (distribution == "uniform") == (not negatives.log_q.any())


def test_softmax_needs_one_corrupted_axis():
    with pytest.raises(ValueError, match="relation 'r'.*softmax"):
        value_model(RelationMeta("r", ("u", "i", "t"), (3, 3, 4), "softmax"))
