"""Projected starting factors: the unfolding's mode marginals, the projection itself, and training with it."""

import numpy as np
import pytest
import torch

from hyperlearn.config import TrainingConfig
from hyperlearn.joint import train_joint
from hyperlearn.model import build_model
from hyperlearn.problem import Observations, Relation
from hyperlearn.projection import UnfoldingProjection, mode_marginals
from hyperlearn.rundir import ModalityState, RelationMeta


def relation_of(coords, values, shape, names, weight=1.0):
    meta = RelationMeta("r", tuple(names), tuple(shape), "squared", weight, None, None)
    observed = Observations(torch.as_tensor(coords, dtype=torch.int64), torch.as_tensor(values, dtype=torch.float32))
    return Relation(meta=meta, splits={"train": observed})


def test_mode_marginals_sum_the_other_modes_of_an_order_three_tensor():
    rng = np.random.default_rng(0)
    shape = (4, 5, 3)
    flat = rng.choice(np.prod(shape), size=25, replace=False)
    coords = np.stack(np.unravel_index(flat, shape))
    values = rng.normal(size=25)
    dense = np.zeros(shape)
    dense[tuple(coords)] = values
    marginals = mode_marginals(relation_of(coords, values, shape, ["a", "b", "c"]), "b")
    assert set(marginals) == {"1_0", "1_2"}
    np.testing.assert_allclose(marginals["1_0"].to_dense().numpy(), dense.sum(axis=2).T, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(marginals["1_2"].to_dense().numpy(), dense.sum(axis=0), rtol=1e-6, atol=1e-6)


def test_projection_of_a_matrix_is_sigmoid_of_x_times_p_and_its_penalty_is_per_entry():
    coords = np.array([[0, 0, 1, 2, 2], [1, 3, 0, 1, 2]])
    values = np.array([5.0, 3.0, 4.0, 1.0, 2.0])
    relation = relation_of(coords, values, (3, 4), ["user", "item"], weight=2.0)
    projection = UnfoldingProjection([relation], "user", rank=2)
    with torch.no_grad():
        for parameter in projection.parameters():
            parameter.normal_()
    x = np.zeros((3, 4))
    x[tuple(coords)] = values
    weight = projection.weights["r__0_1"].detach().numpy()
    expected = 1 / (1 + np.exp(-(x @ weight + projection.offset.detach().numpy())))
    np.testing.assert_allclose(projection().detach().numpy(), expected, rtol=1e-5)
    assert projection.weight_penalty().item() == pytest.approx(0.5 * 2.0 * (weight**2).sum() / 5, rel=1e-5)


def test_entities_with_the_same_entries_start_with_the_same_embedding():
    """The start is a function of an entity's observations, not a free row: users 0 and 2 rated alike."""
    coords = np.array([[0, 0, 1, 2, 2], [1, 3, 0, 1, 3]])
    values = np.array([5.0, 3.0, 4.0, 5.0, 3.0])
    start = UnfoldingProjection([relation_of(coords, values, (3, 4), ["user", "item"])], "user", rank=3)()
    torch.testing.assert_close(start[0], start[2])
    assert not torch.allclose(start[0], start[1])


def test_dropout_drops_entries_in_training_only_and_keeps_the_input_unbiased():
    coords = np.array([[0, 0, 1, 2, 2, 1], [1, 3, 0, 1, 2, 2]])
    values = np.array([5.0, 3.0, 4.0, 1.0, 2.0, 3.0])
    relation = relation_of(coords, values, (3, 4), ["user", "item"])
    projection = UnfoldingProjection([relation], "user", rank=2, dropout=0.5, seed=7)
    with torch.no_grad():
        projection.weights["r__0_1"].normal_(std=0.1)
    full = projection.eval()()
    torch.testing.assert_close(projection(), full)
    projection.train()
    with torch.no_grad():
        draws = torch.stack([torch.logit(projection()) for _ in range(4000)])
    assert not torch.allclose(draws[0], draws[1])
    torch.testing.assert_close(draws.mean(0), torch.logit(full), atol=0.1, rtol=0.0)
    twins = [UnfoldingProjection([relation], "user", rank=2, dropout=0.5, seed=7) for _ in range(2)]
    for twin in twins:
        twin.load_state_dict(projection.state_dict())
    torch.testing.assert_close(twins[0](), twins[1]())


def test_a_model_publishes_its_state_without_dropout_and_stays_in_training_mode():
    coords = np.array([[0, 0, 1, 2, 2], [1, 3, 0, 1, 2]])
    relation = relation_of(coords, [5.0, 3.0, 4.0, 1.0, 2.0], (3, 4), ["user", "item"])
    config = TrainingConfig(rank=2, projected=("user",), projection_dropout=0.5, encoder="none", device="cpu")
    start = ModalityState(np.zeros((3, 2), np.float32), {"r": np.zeros(3, np.float32)})
    model = build_model("user", start, None, [relation], config, "cpu")
    published = model.state().factor
    assert model.training
    np.testing.assert_allclose(published, model.eval()().detach().numpy())


def test_dropout_rate_must_be_below_one():
    with pytest.raises(ValueError, match="projection_dropout"):
        TrainingConfig(projection_dropout=1.0).validate()


def test_joint_training_with_a_projected_modality_learns_the_planted_ratings(planted_run):
    """From the projection's untrained start, training brings validation RMSE near the planted noise."""
    config = TrainingConfig(
        rank=16, projected=("item",), projection_l2=1.0, init="random", encoder="none", graph_weight=0.0,
        learning_rate=0.02, rounds=15, local_steps=10, patience=15, device="cpu",
    )
    result = train_joint(planted_run, config, log=lambda line: None)
    start, best = result.history[0]["validation/rating/rmse"], result.history[-1]["validation/rating/rmse"]
    assert best < 0.6 * start
    assert result.metrics["test_rmse"] < 0.6 * start


def test_a_modality_on_two_axes_projects_both_of_its_roles():
    """user × user: the start sees who a user befriends (row marginal) and who befriends them (column)."""
    coords = np.array([[0, 1, 2, 2], [1, 2, 0, 1]])
    values = np.ones(4)
    marginals = mode_marginals(relation_of(coords, values, (3, 3), ["user", "user"]), "user")
    x = np.zeros((3, 3))
    x[tuple(coords)] = values
    assert set(marginals) == {"0_1", "1_0"}
    np.testing.assert_allclose(marginals["0_1"].to_dense().numpy(), x)
    np.testing.assert_allclose(marginals["1_0"].to_dense().numpy(), x.T)
