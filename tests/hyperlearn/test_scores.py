"""Scores through CP blocks: cp is the plain CP model, pairwise is PITF, candidates agree with tuples."""

import itertools

import pytest
import torch

from hyperlearn.rundir import Evaluation, RelationMeta
from hyperlearn.scores import candidate_scores, grouped_candidate_scores, replaced_axis_scores, tuple_scores
from hyperlearn.structure import relation_blocks


def _model(shape, rank, seed=0):
    generator = torch.Generator().manual_seed(seed)
    factors = [torch.randn(n, rank, generator=generator, dtype=torch.float64) for n in shape]
    biases = [torch.randn(n, generator=generator, dtype=torch.float64) for n in shape]
    return factors, biases


def _all_tuples(shape):
    return torch.tensor(list(itertools.product(*map(range, shape)))).t()


def test_tuple_scores_add_offset_biases_and_cp():
    factors = [torch.tensor([[1.0, 2.0], [0.5, -1.0]]), torch.tensor([[3.0, 1.0]])]
    biases = [torch.tensor([0.1, 0.2]), torch.tensor([-0.3])]
    coords = torch.tensor([[0, 1], [0, 0]])
    blocks = relation_blocks(RelationMeta("r", ("a", "b"), (2, 1), "squared"), 2)
    expected = torch.tensor([3.5 + 0.1 - 0.3 + 5.0, 3.5 + 0.2 - 0.3 + 0.5])
    torch.testing.assert_close(tuple_scores(blocks, factors, biases, coords, 3.5), expected)


def test_pairwise_scores_are_pitf_on_the_target_pairs():
    """s(u, i, t) = ⟨U_u, Tᵁ_t⟩ + ⟨I_i, Tᴵ_t⟩ on disjoint column halves, plus biases."""
    shape = (4, 3, 5)
    meta = RelationMeta("tagging", ("user", "item", "tag"), shape, "bpr", structure="pairwise", evaluation=Evaluation(2))
    (users, items, tags), biases = _model(shape, rank=6)
    coords = _all_tuples(shape)
    u, i, t = coords
    expected = (users[u, :3] * tags[t, :3]).sum(1) + (items[i, 3:] * tags[t, 3:]).sum(1)
    expected = expected + biases[0][u] + biases[1][i] + biases[2][t] + 0.5
    blocks = relation_blocks(meta, 6)
    torch.testing.assert_close(tuple_scores(blocks, [users, items, tags], biases, coords, 0.5), expected)


@pytest.mark.parametrize(
    "structure, evaluation", [("cp", Evaluation(1)), ("pairwise", Evaluation(1)), ("pairwise", None)]
)
@pytest.mark.parametrize("target", [0, 1, 2])
def test_candidate_scores_equal_the_tuple_scores_of_every_candidate(structure, evaluation, target):
    shape = (4, 3, 5)
    meta = RelationMeta("r", ("a", "b", "c"), shape, "bpr", structure=structure, evaluation=evaluation)
    factors, biases = _model(shape, rank=6, seed=target)
    blocks = relation_blocks(meta, 6)
    contexts = torch.tensor([[0, 3, 1], [2, 0, 1], [4, 4, 0]])
    scores = candidate_scores(blocks, factors, biases, contexts, target, 0.25)
    for query in range(contexts.shape[1]):
        tuples = contexts[:, query : query + 1].repeat(1, shape[target])
        tuples[target] = torch.arange(shape[target])
        torch.testing.assert_close(scores[query], tuple_scores(blocks, factors, biases, tuples, 0.25))


def test_a_modality_on_two_axes_gets_the_gradient_of_both():
    """user × user: the one factor is passed for both axes and collects both axes' gradients."""
    meta = RelationMeta("friends", ("user", "user"), (5, 5), "logistic")
    factor = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    coords = torch.tensor([[0, 1, 4], [2, 0, 4]])
    tuple_scores(relation_blocks(meta, 3), [factor, factor], [bias, bias], coords, 0.0).sum().backward()
    with torch.no_grad():
        expected = torch.zeros(5, 3, dtype=torch.float64)
        for a, b in coords.t().tolist():
            expected[a] += factor[b]
            expected[b] += factor[a]
    torch.testing.assert_close(factor.grad, expected)
    torch.testing.assert_close(bias.grad, torch.tensor([2.0, 1, 1, 0, 2], dtype=torch.float64))


@pytest.mark.parametrize(
    ("structure", "evaluation", "axis"),
    [("cp", None, 2), ("cp", Evaluation(1), 0), ("pairwise", Evaluation(2), 2), ("pairwise", None, 1)],
)
def test_replaced_axis_scores_equal_the_tuple_scores_of_the_corrupted_tuples(structure, evaluation, axis):
    """The negatives' shortcut (a positive's other rows shared by its negatives) gives the same scores as
    scoring every corrupted tuple on its own, for blocks with and without the replaced axis."""
    shape = (5, 4, 6)
    meta = RelationMeta("r", ("a", "b", "c"), shape, "bpr", structure=structure, evaluation=evaluation)
    blocks = relation_blocks(meta, 6)
    factors, biases = _model(shape, 6)
    generator = torch.Generator().manual_seed(1)
    coords = torch.stack([torch.randint(n, (7,), generator=generator) for n in shape])
    replacements = torch.randint(shape[axis], (3, 7), generator=generator)
    positive, negative = replaced_axis_scores(blocks, factors, biases, coords, axis, replacements, 0.25)
    torch.testing.assert_close(positive, tuple_scores(blocks, factors, biases, coords, 0.25))
    corrupted = coords.repeat(1, 3)
    corrupted[axis] = replacements.reshape(-1)
    torch.testing.assert_close(negative, tuple_scores(blocks, factors, biases, corrupted, 0.25).view(3, 7))


@pytest.mark.parametrize(("structure", "groups"), [("cp", 1), ("cp", 3), ("pairwise", 2), ("pairwise", 7)])
def test_grouped_candidate_scores_equal_the_tuple_scores_of_each_group_s_candidates(structure, groups):
    """Tuple e meets the candidates of row e mod G; 7 tuples in 3 groups leave the last group one short."""
    shape = (5, 4, 6)
    meta = RelationMeta("r", ("a", "b", "c"), shape, "bpr", structure=structure, evaluation=Evaluation(2))
    blocks = relation_blocks(meta, 6)
    factors, biases = _model(shape, 6)
    generator = torch.Generator().manual_seed(2)
    coords = torch.stack([torch.randint(n, (7,), generator=generator) for n in shape])
    candidates = torch.randint(shape[2], (groups, 4), generator=generator)
    scores = grouped_candidate_scores(blocks, factors, biases, coords, 2, candidates, 0.25)
    corrupted = coords.repeat(1, 4)
    corrupted[2] = candidates[torch.arange(7) % groups].t().reshape(-1)
    torch.testing.assert_close(scores, tuple_scores(blocks, factors, biases, corrupted, 0.25).view(4, 7))
