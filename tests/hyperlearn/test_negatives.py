"""Sampled negatives: which axes they corrupt, from which distribution, and that a seed repeats them."""

import numpy as np
import pytest
import torch

from hyperlearn.negatives import corrupted_axes, sample_negatives
from hyperlearn.rundir import Evaluation, Negatives, RelationMeta

SHAPE = (6, 5, 40)
POSITIVES = torch.tensor([[0, 1, 2, 5], [3, 4, 0, 1], [1, 1, 7, 39]])


def _meta(**changes):
    return RelationMeta("tagging", ("user", "item", "tag"), SHAPE, "bpr", **changes)


def test_default_axes_are_the_evaluation_target_else_every_axis():
    assert corrupted_axes(_meta(evaluation=Evaluation(2))) == (2,)
    assert corrupted_axes(_meta()) == (0, 1, 2)
    assert corrupted_axes(_meta(negatives=Negatives(axes=(0, 1)), evaluation=Evaluation(2))) == (0, 1)


@pytest.mark.parametrize("distribution", ["uniform", "popularity"])
def test_each_negative_copies_its_positive_but_one_corrupted_axis(distribution):
    meta = _meta(negatives=Negatives(axes=(1, 2), count=8, distribution=distribution))
    sampled = sample_negatives(meta, POSITIVES, POSITIVES, torch.Generator().manual_seed(0))
    assert sampled.coords.shape == (3, 32) and sampled.count == 8
    aligned = sampled.coords.view(3, 8, 4)
    changed = aligned != POSITIVES[:, None, :]
    assert not changed[0].any(), "axis 0 is never corrupted"
    assert (changed.sum(0) <= 1).all()
    assert (sampled.coords < torch.tensor(SHAPE)[:, None]).all() and (sampled.coords >= 0).all()


def test_a_seed_gives_the_same_negatives():
    meta = _meta(negatives=Negatives(count=5, distribution="popularity"))
    draw = lambda seed: sample_negatives(meta, POSITIVES, POSITIVES, torch.Generator().manual_seed(seed)).coords
    torch.testing.assert_close(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))


def test_popularity_sampling_follows_training_frequency_plus_one_and_reports_log_q():
    """Tag 0 appears 96 times in training and tags 1–39 never: with add-one smoothing tag 0 has probability
    97/136 and log Q says so, for the drawn entity and for the positive's own."""
    train = torch.stack([torch.zeros(96, dtype=torch.int64), torch.zeros(96, dtype=torch.int64), torch.zeros(96, dtype=torch.int64)])
    meta = _meta(negatives=Negatives(count=2000, distribution="popularity"), evaluation=Evaluation(2))
    positives = torch.tensor([[0], [0], [5]])
    sampled = sample_negatives(meta, train, positives, torch.Generator().manual_seed(0))
    tags = sampled.coords[2]
    probability = 97 / 136
    assert (tags == 0).double().mean().item() == pytest.approx(probability, abs=0.03)
    np.testing.assert_allclose(sampled.log_q.reshape(-1)[tags == 0].numpy(), np.log(probability), rtol=1e-6)
    np.testing.assert_allclose(sampled.log_q.reshape(-1)[tags == 3].numpy(), np.log(1 / 136), rtol=1e-6)
    np.testing.assert_allclose(sampled.positive_log_q.numpy(), np.log(1 / 136), rtol=1e-6)


def test_uniform_negatives_have_no_log_q_correction():
    sampled = sample_negatives(_meta(evaluation=Evaluation(2)), POSITIVES, POSITIVES, torch.Generator().manual_seed(0))
    assert not sampled.log_q.any() and not sampled.positive_log_q.any()
    assert (sampled.coords[:2] == POSITIVES[:2].repeat(1, 4)).all(), "only the target axis is corrupted"


def test_an_axis_out_of_range_is_named():
    with pytest.raises(ValueError, match="tagging.*axis 3"):
        sample_negatives(_meta(negatives=Negatives(axes=(3,))), POSITIVES, POSITIVES, torch.Generator())


@pytest.mark.parametrize("distribution", ["uniform", "popularity"])
def test_shared_negatives_are_one_draw_of_entities_per_group_of_positives(distribution):
    meta = _meta(negatives=Negatives(count=6, distribution=distribution, shared_by=3), evaluation=Evaluation(2))
    sampled = sample_negatives(meta, POSITIVES, POSITIVES, torch.Generator().manual_seed(0))
    assert sampled.coords is None and sampled.axis == 2 and sampled.count == 6
    assert sampled.entities.shape == (2, 6) and ((sampled.entities >= 0) & (sampled.entities < SHAPE[2])).all()
    assert torch.broadcast_shapes(sampled.log_q.shape, sampled.positive_log_q.shape) == (6, 4)
    assert (distribution == "uniform") == (not sampled.log_q.any() and not sampled.positive_log_q.any())


def test_shared_popularity_negatives_follow_training_frequency_and_report_log_q():
    train = torch.zeros((3, 96), dtype=torch.int64)
    meta = _meta(negatives=Negatives(count=2000, distribution="popularity", shared_by=2), evaluation=Evaluation(2))
    positives = torch.tensor([[0, 1], [0, 1], [5, 0]])
    sampled = sample_negatives(meta, train, positives, torch.Generator().manual_seed(0))
    probability = 97 / 136
    assert sampled.entities.shape == (1, 2000)
    assert (sampled.entities == 0).double().mean().item() == pytest.approx(probability, abs=0.03)
    drawn_zero = (sampled.entities[0] == 0)[:, None].expand(2000, 2)
    np.testing.assert_allclose(sampled.log_q[drawn_zero].numpy(), np.log(probability), rtol=1e-6)
    np.testing.assert_allclose(sampled.positive_log_q.numpy(), [[np.log(1 / 136), np.log(probability)]], rtol=1e-6)


def test_shared_negatives_need_one_corrupted_axis():
    with pytest.raises(ValueError, match="tagging.*shared negatives replace one axis.*\\[0, 1, 2\\]"):
        sample_negatives(_meta(negatives=Negatives(shared_by=2)), POSITIVES, POSITIVES, torch.Generator())
