"""Starting factors: ALS on the regressions fits the training data; random starts are seeded; collapsed
factors are caught."""

import dataclasses

import numpy as np
import pytest
import scipy.sparse
import torch

from hyperlearn.collapse import CollapsedFactorError, check_not_collapsed, collapsed_modalities

from hyperlearn.config import TrainingConfig
from hyperlearn.start import initial_states
from hyperlearn.joint import JointTrainers
from hyperlearn.metrics import evaluate, predict
from hyperlearn.problem import load_problem
from hyperlearn.rounds import run_rounds
from hyperlearn.rundir import Entries, ModalityState, RelationMeta, RunDir


def test_random_start_is_seeded_and_small(planted_run):
    problem = load_problem(planted_run)
    config = TrainingConfig(rank=4, init="random", seed=7)
    first, second = initial_states(problem, config), initial_states(problem, config)
    for m in problem.modalities:
        np.testing.assert_array_equal(first[m].factor, second[m].factor)
        assert np.abs(first[m].factor).max() < 0.5


def test_a_random_start_gives_an_order_three_block_scores_of_order_a_tenth(planted_run):
    """Away from the zero saddle of a 3-way product (0.1/√R per entry would give scores ~1e-3 here), not yet
    saturating the loss."""
    problem = load_problem(planted_run)
    tagging = next(r for r in problem.relations if r.meta.name == "tagging")
    cp = dataclasses.replace(tagging, meta=dataclasses.replace(tagging.meta, structure="cp"))
    problem = dataclasses.replace(problem, relations=(cp,))
    states = initial_states(problem, TrainingConfig(rank=16, init="random"))
    scores = predict(cp, states, cp.train.coords)
    assert 0.05 < scores.std() < 0.2


def test_als_fits_training_ratings_far_better_than_the_mean(planted_run):
    problem = load_problem(planted_run)
    rating = problem.primary_relation()
    als = initial_states(problem, TrainingConfig(rank=4, init="als", init_iterations=10))
    start = initial_states(problem, TrainingConfig(rank=4, init="random"))
    assert evaluate(rating, als, "train")["train/rating/rmse"] < 0.5 * evaluate(rating, start, "train")["train/rating/rmse"]


@pytest.mark.parametrize("loss", ["logistic", "bpr", "softmax"])
def test_modalities_only_observed_tuples_span_keep_a_seeded_random_start(planted_run, tmp_path, loss):
    """Tags are spanned only by the tagging relation: whatever its loss, their start is the random one, not
    the all-zero fixed point that least squares on 1/0 targets converges to for a 3-way product."""
    run = _with_tagging_loss(planted_run, tmp_path, loss)
    problem = load_problem(run)
    config = TrainingConfig(rank=4, init="als")
    als, random = initial_states(problem, config), initial_states(problem, config.replace(init="random"))
    np.testing.assert_array_equal(als["tag"].factor, random["tag"].factor)
    assert not collapsed_modalities(als, random)
    assert np.abs(als["user"].factor - random["user"].factor).max() > 0.1, "users are fitted to their ratings"


def _with_tagging_loss(planted_run, tmp_path, loss):
    run = RunDir(tmp_path / loss)
    for name in planted_run.relation_names():
        meta = planted_run.read_relation_meta(name)
        if name == "tagging":
            meta = dataclasses.replace(meta, loss=loss)
        splits = {split: planted_run.read_relation_split(name, split) for split in ("train", "validation", "test")}
        run.write_relation(meta, splits)
    return run


def test_als_fits_a_modality_on_two_axes(tmp_path):
    """user × user trust values: each occurrence of the modality is solved with the other's current values."""
    rng = np.random.default_rng(1)
    latent = rng.normal(size=(30, 2))
    coords = np.stack(np.unravel_index(rng.choice(900, size=500, replace=False), (30, 30)))
    values = 1.0 + (latent[coords[0]] * latent[coords[1]]).sum(1)
    meta = RelationMeta("trust", ("user", "user"), (30, 30), "squared")
    run = RunDir(tmp_path)
    run.write_relation(meta, {split: Entries(coords, values, (30, 30)) for split in ("train", "validation", "test")})
    problem = load_problem(run)
    relation = problem.relations[0]
    start = initial_states(problem, TrainingConfig(rank=2, init="random"))
    als = initial_states(problem, TrainingConfig(rank=2, l2=1e-4, init_iterations=20))
    assert evaluate(relation, als, "train")["train/trust/rmse"] < 0.2 * evaluate(relation, start, "train")["train/trust/rmse"]


def test_collapse_check_fires_on_a_forced_zero_start_and_names_the_modality(planted_run):
    problem = load_problem(planted_run)
    config = TrainingConfig(rank=4, encoder="none", init="random", rounds=2, device="cpu")
    with pytest.raises(CollapsedFactorError, match="modality 'tag'"):
        run_rounds(problem, lambda refit: _ZeroTagStart(JointTrainers(problem, config)), config, "joint", log=print)


class _ZeroTagStart:
    """Joint trainers whose published start has the tag factor forced to zero."""

    def __init__(self, trainers: JointTrainers) -> None:
        self.trainers = trainers

    def start(self):
        states = self.trainers.start()
        return {**states, "tag": ModalityState(np.zeros_like(states["tag"].factor), states["tag"].biases)}

    def round(self, states):
        return self.trainers.round(states)

    def weights(self):
        return self.trainers.weights()

    def close(self):
        self.trainers.close()


def test_a_factor_whose_norm_fell_by_orders_of_magnitude_counts_as_collapsed():
    start = {"a": ModalityState(np.ones((3, 2)), {}), "b": ModalityState(np.ones((3, 2)), {})}
    now = {"a": ModalityState(np.full((3, 2), 1e-5), {}), "b": ModalityState(np.full((3, 2), 0.5), {})}
    assert set(collapsed_modalities(now, start)) == {"a"}
    assert set(collapsed_modalities({"a": ModalityState(np.zeros((3, 2)), {})})) == {"a"}
    with pytest.raises(CollapsedFactorError, match="modality 'a'.*fell"):
        check_not_collapsed(now, start)


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


def test_als_fits_an_order_three_cp_regression_instead_of_collapsing_to_zero(tmp_path):
    """y = μ + Σ_r a_ir b_jr c_kr + noise on a sparse sample: started at 0.1/√R per entry, ALS's first sweep
    shrank every factor to 0 (the zero saddle of a 3-way product); the start scaled to the block's order fits."""
    rng = np.random.default_rng(0)
    shape, rank, tuples = (60, 50, 40), 3, 6000
    planted = [rng.normal(scale=rank ** (-1 / 6), size=(n, rank)) for n in shape]
    coords = np.stack(np.unravel_index(rng.choice(np.prod(shape), size=tuples, replace=False), shape))
    term = np.prod([f[c] for f, c in zip(planted, coords)], axis=0).sum(1)
    values = 3.0 + term + rng.normal(scale=0.1, size=coords.shape[1])
    meta = RelationMeta("r", ("a", "b", "c"), shape, "squared")
    run = RunDir(tmp_path)
    run.write_relation(meta, {split: Entries(coords, values, shape) for split in ("train", "validation", "test")})
    problem = load_problem(run)
    states = initial_states(problem, TrainingConfig(rank=2 * rank, init="als", init_iterations=20))
    check_not_collapsed(states, when="after the ALS start")
    assert evaluate(problem.relations[0], states, "train")["train/r/rmse"] < 0.25 * float(np.std(term))


def test_graph_coupled_solve_is_the_minimiser_and_fills_rows_without_data():
    """CG solution of G_i a_i + c(LA)_i = b_i: the gradient of the quadratic vanishes, and a row with no data
    takes the (degree-normalised) mean of its neighbours."""
    from hyperlearn.graphs import normalized_laplacian
    from hyperlearn.start import _solve_graph_coupled

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


def test_als_sweeps_run_numpys_blas_on_one_thread_and_restore_it(planted_run, monkeypatch):
    """NumPy's BLAS threads spin after each call on the cores torch's threads want next; the sweeps, which
    alternate between the two (SciPy's CG in the graph-coupled solve), hold it to one thread."""
    from threadpoolctl import threadpool_info, threadpool_limits

    import hyperlearn.start as start

    def blas_threads() -> set[int]:
        return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}

    seen = []
    solve = start._solve_graph_coupled

    def watched(*args, **kwargs):
        seen.append(blas_threads())
        return solve(*args, **kwargs)

    monkeypatch.setattr(start, "_solve_graph_coupled", watched)
    with threadpool_limits(limits=2, user_api="blas"):  # the tests' environment asks for one thread already
        config = TrainingConfig(rank=4, init="als", init_iterations=2, graph_weight=0.1)
        initial_states(load_problem(planted_run), config)
        assert blas_threads() == {2}
    assert seen and all(threads == {1} for threads in seen)
