"""Starting factors: ALS on observed entries fits the training data; random starts are seeded."""

import numpy as np
import scipy.sparse
import torch

from hyperlearn.config import TrainingConfig
from hyperlearn.init import initial_states
from hyperlearn.metrics import evaluate
from hyperlearn.problem import load_problem
from hyperlearn.rundir import Entries, RelationMeta, RunDir


def test_random_start_is_seeded_and_small(planted_run):
    problem = load_problem(planted_run)
    config = TrainingConfig(rank=4, init="random", seed=7)
    first, second = initial_states(problem, config), initial_states(problem, config)
    for m in problem.modalities:
        np.testing.assert_array_equal(first[m].factor, second[m].factor)
        assert np.abs(first[m].factor).max() < 0.5


def test_als_fits_training_ratings_far_better_than_the_mean(planted_run):
    problem = load_problem(planted_run)
    rating = problem.primary_relation()
    als = initial_states(problem, TrainingConfig(rank=4, init="als", init_iterations=10))
    start = initial_states(problem, TrainingConfig(rank=4, init="random"))
    assert evaluate(rating, als, "train")["train/rating/rmse"] < 0.5 * evaluate(rating, start, "train")["train/rating/rmse"]


def test_als_starts_tag_factors_from_the_observed_tuples(planted_run):
    """Tags are spanned only by the logistic tagging relation: ALS still gives them an informative start."""
    problem = load_problem(planted_run)
    tagging = next(r for r in problem.relations if r.meta.name == "tagging")
    als = initial_states(problem, TrainingConfig(rank=4, init="als"))
    assert evaluate(tagging, als, "train")["train/tagging/auc"] > 0.65


def test_als_recovers_pure_biases_of_an_order_three_tensor(tmp_path):
    """y = μ + a_i + b_j + c_k: the closed-form bias sweeps find the planted offsets (up to the ridge)."""
    rng = np.random.default_rng(0)
    shape = (6, 5, 4)
    offsets = [rng.normal(size=n) for n in shape]
    coords = np.stack(np.unravel_index(np.arange(np.prod(shape)), shape))
    values = 2.0 + sum(o[c] for o, c in zip(offsets, coords))
    meta = RelationMeta("r", ("a", "b", "c"), shape, "squared")
    run = RunDir(tmp_path)
    run.write_relation(meta, {split: Entries(coords, values, shape) for split in ("train", "validation", "test")})
    problem = load_problem(run)
    states = initial_states(problem, TrainingConfig(rank=2, l2=1e-6, init_iterations=30))
    assert evaluate(problem.relations[0], states, "train")["train/r/rmse"] < 1e-3
    fitted = states["a"].biases["r"]
    np.testing.assert_allclose(fitted - fitted.mean(), offsets[0] - offsets[0].mean(), atol=0.05)


def test_graph_coupled_solve_is_the_minimiser_and_fills_rows_without_data():
    """CG solution of G_i a_i + c(LA)_i = b_i: the gradient of the quadratic vanishes, and a row with no data
    takes the (degree-normalised) mean of its neighbours."""
    from hyperlearn.graphs import normalized_laplacian
    from hyperlearn.init import _solve_graph_coupled

    rng = np.random.default_rng(0)
    size, rank = 6, 2
    h = rng.normal(size=(size, 5, rank))
    gram = torch.from_numpy(np.einsum("nki,nkj->nij", h, h))
    gram[3] = 0  # entity 3 has no training entries
    rhs = torch.from_numpy(rng.normal(size=(size, rank)))
    rhs[3] = 0
    weights = scipy.sparse.csr_matrix(np.ones((size, size)) - np.eye(size))
    laplacian = normalized_laplacian(weights)
    solution = _solve_graph_coupled(gram + 1e-9 * torch.eye(rank), rhs, laplacian, 0.5, torch.zeros(size, rank))
    residual = torch.einsum("nij,nj->ni", gram, solution) + 0.5 * torch.from_numpy(laplacian @ solution.numpy()) - rhs
    assert residual.abs().max() < 1e-5
    others = [i for i in range(size) if i != 3]
    np.testing.assert_allclose(solution[3].numpy(), solution[others].mean(0).numpy(), atol=1e-5)
