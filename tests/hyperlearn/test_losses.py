"""The per-modality loss has the same gradient as the global objective with respect to that modality."""

import pytest
import torch

from hyperlearn.config import TrainingConfig
from hyperlearn.start import initial_states
from hyperlearn.losses import cross_modal_loss, proximal_term, relation_loss, ridge
from hyperlearn.model import build_model
from hyperlearn.negatives import sample_negatives
from hyperlearn.problem import Observations, Relation, load_problem
from hyperlearn.rundir import Evaluation, Negatives, RelationMeta
from hyperlearn.scores import tuple_scores
from hyperlearn.structure import relation_blocks
from hyperlearn.value_models import value_model


def test_ridge_counts_each_row_once_per_entry_and_skips_projected_factors():
    coords = torch.tensor([[0, 0, 2], [1, 1, 0]])
    factors = [torch.tensor([[1.0, 2.0], [5.0, 5.0], [0.0, 3.0]]), torch.tensor([[1.0, 0.0], [0.0, 2.0]])]
    biases = [torch.tensor([1.0, 7.0, 2.0]), torch.tensor([0.5, 1.0])]
    per_entry = [(f[c].pow(2).sum(1) + b[c].pow(2)).sum() for f, b, c in zip(factors, biases, coords)]
    assert ridge(factors, biases, coords).item() == pytest.approx(float(sum(per_entry)) / 3)
    without_first = float(biases[0][coords[0]].pow(2).sum() + per_entry[1]) / 3
    assert ridge(factors, biases, coords, free=[False, True]).item() == pytest.approx(without_first)


@pytest.mark.parametrize("projected", [(), ("user",), ("user", "item")])
def test_modality_loss_gradient_equals_joint_gradient(planted_run, projected):
    problem = load_problem(planted_run)
    config = TrainingConfig(
        rank=4, conv_width=8, lstm_width=8, diffusion_steps=2, device="cpu", init="random", projected=projected
    )
    states = initial_states(problem, config)
    models = {
        m: build_model(m, states[m], problem.laplacians[m], problem.relations_of(m), config, "cpu")
        for m in problem.modalities
    }

    def loss_for(relations, seed):
        factors = {m: model() for m, model in models.items()}
        generator = torch.Generator().manual_seed(seed)
        biases = {m: model.biases for m, model in models.items()}
        loss = cross_modal_loss(relations, factors, biases, config.l2, generator, projected)
        return loss, factors

    joint, factors = loss_for(problem.relations, seed=3)
    for m, model in models.items():
        joint = joint + model.regulariser(factors[m])
    joint.backward()
    expected = {n: p.grad.clone() for n, p in models["user"].named_parameters()}
    for model in models.values():
        model.zero_grad()
    own, factors = loss_for(problem.relations_of("user"), seed=3)
    (own + models["user"].regulariser(factors["user"])).backward()
    for name, parameter in models["user"].named_parameters():
        torch.testing.assert_close(parameter.grad, expected[name], msg=name)


def test_proximal_term_is_zero_at_the_previous_state_and_positive_elsewhere(planted_run):
    problem = load_problem(planted_run)
    relations = problem.relations_of("item")
    factor = torch.randn(problem.sizes["item"], 3)
    biases = {r.meta.name: torch.zeros(problem.sizes["item"]) for r in relations}
    assert proximal_term(relations, "item", factor, factor, biases, biases) == 0
    assert proximal_term(relations, "item", factor + 0.1, factor, biases, biases) > 0


def test_proximal_term_counts_every_axis_of_a_modality():
    """user × user: each entry pulls both of its users towards their last state."""
    coords = torch.tensor([[0, 1], [2, 2]])
    relation = Relation(
        meta=RelationMeta("friends", ("user", "user"), (3, 3), "logistic"),
        splits={"train": Observations(coords, torch.ones(2))},
    )
    previous = torch.zeros(3, 2)
    factor = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    biases = {"friends": torch.zeros(3)}
    squares = factor.pow(2).sum(1)
    expected = 0.5 * (squares[0] + squares[1] + 2 * squares[2]) / 2
    assert proximal_term([relation], "user", factor, previous, biases, biases).item() == pytest.approx(expected.item())


@pytest.mark.parametrize(
    ("structure", "axes"), [("cp", ("head", "relation", "head")), ("pairwise", ("user", "item", "tag"))]
)
@pytest.mark.parametrize("loss", ["bpr", "softmax", "logistic"])
def test_shared_negatives_score_as_the_corrupted_tuples_they_stand_for(structure, axes, loss):
    """The shared-candidate path (a batched matrix product per group of positives) gives the loss and gradients
    of scoring each positive with each of its group's candidates on the target axis as a tuple, where a
    candidate equal to the positive's own entity is left out — here a knowledge graph whose head and tail are
    one modality, and PITF's blocks."""
    sizes = {"head": 6, "relation": 3, "user": 5, "item": 4, "tag": 6}
    shape = tuple(sizes[m] for m in axes)
    negatives = Negatives(count=40, distribution="popularity", shared_by=4)
    meta = RelationMeta("r", axes, shape, loss, structure=structure, negatives=negatives, evaluation=Evaluation(2))
    generator = torch.Generator().manual_seed(0)
    coords = torch.stack([torch.randint(n, (9,), generator=generator) for n in shape])
    relation = Relation(meta, {"train": Observations(coords, torch.ones(9))})
    modalities = sorted(set(axes))
    params = {m: torch.randn(sizes[m], 4, generator=generator, dtype=torch.float64) for m in modalities}
    bias_params = {m: torch.randn(sizes[m], generator=generator, dtype=torch.float64) for m in modalities}
    for tensor in [*params.values(), *bias_params.values()]:
        tensor.requires_grad_()
    factors, biases = [params[m] for m in axes], [bias_params[m] for m in axes]

    fast = relation_loss(relation, factors, biases, 0.0, 0.1, torch.Generator().manual_seed(5))
    fast_grads = torch.autograd.grad(fast, [*params.values(), *bias_params.values()])

    drawn = sample_negatives(meta, coords, coords, torch.Generator().manual_seed(5))
    assert drawn.entities.shape == (3, 40), "9 positives shared by 4: three groups"
    own = drawn.entities[torch.arange(9) % 3].t()
    assert (own == coords[2]).any(), "the draw holds accidental hits to leave out"
    corrupted = coords.repeat(1, drawn.count)
    corrupted[2] = own.reshape(-1)
    blocks = relation_blocks(meta, 4)
    negative_scores = tuple_scores(blocks, factors, biases, corrupted, 0.0).view(drawn.count, 9)
    negative_scores = torch.where(corrupted[2].view(drawn.count, 9) == coords[2], -torch.inf, negative_scores)
    fit = value_model(meta).fit(tuple_scores(blocks, factors, biases, coords, 0.0), None, negative_scores, drawn)
    slow = fit + 0.1 * ridge(factors, biases, coords)
    slow_grads = torch.autograd.grad(slow, [*params.values(), *bias_params.values()])

    torch.testing.assert_close(fast, slow)
    for fast_grad, slow_grad in zip(fast_grads, slow_grads):
        torch.testing.assert_close(fast_grad, slow_grad)
