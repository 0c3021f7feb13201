"""Starting factors and biases: the cheap decomposition the encoders refine (method.md §2).

CP-ALS on the observed entries only (never the dense tensor): each sweep solves, for every modality in turn,
its entity biases and then its factor, from MTTKRP and the per-row Gram matrices of the Khatri–Rao rows.
Without a graph that is one small ridge problem per entity row; with one, the Dirichlet term of the objective
couples the rows (as in GRALS) and the factor comes from one conjugate-gradient solve, which also gives
entities without training data the embedding their graph neighbours imply. Works for any order and for several relations sharing a
modality. Valued (squared-loss) relations drive it; a modality that only observed-tuple relations span (say,
tags) is fitted to those as least squares on 1 for observed and 0 for sampled unobserved tuples, so its
factor starts consistent with the others instead of random.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from hyperlearn.config import TrainingConfig
from hyperlearn.losses import corrupt, tuple_scores
from hyperlearn.rundir import ModalityState
from hyperlearn.problem import Problem, Relation
from hyperlearn.tensor_ops import mttkrp, row_gram


@dataclass(frozen=True)
class _LeastSquaresTerm:
    """A relation seen as least squares over fixed entries: targets ≈ offset + biases + CP."""

    name: str
    modalities: tuple[str, ...]
    coords: torch.Tensor
    targets: torch.Tensor
    offset: float
    entry_weight: float


def random_states(problem: Problem, config: TrainingConfig) -> dict[str, ModalityState]:
    """Small Gaussian factors (scaled so initial predictions are O(0.1)) and zero biases, seeded."""
    generator = torch.Generator().manual_seed(config.seed)
    states = {}
    for name, size in problem.sizes.items():
        factor = torch.randn(size, config.rank, generator=generator) * (0.1 / math.sqrt(config.rank))
        biases = {r.meta.name: torch.zeros(size).numpy() for r in problem.relations_of(name)}
        states[name] = ModalityState(factor=factor.numpy(), biases=biases)
    return states


def initial_states(problem: Problem, config: TrainingConfig) -> dict[str, ModalityState]:
    """The starting point of training: `config.init` = "random", or "als" sweeps on top of it."""
    states = random_states(problem, config)
    if config.init == "random":
        return states
    terms = _terms_per_modality(problem, config)
    factors = {m: torch.from_numpy(s.factor).double() for m, s in states.items()}
    biases = {(m, r): torch.from_numpy(b).double() for m, s in states.items() for r, b in s.biases.items()}
    for _ in range(config.init_iterations):
        for modality, own_terms in terms.items():
            for term in own_terms:
                _update_bias(modality, term, factors, biases, config.l2)
            smoothing = config.graph_weight / (2 * problem.sizes[modality])
            _update_factor(modality, own_terms, factors, biases, config.l2, problem.laplacians[modality], smoothing)
    for modality, state in states.items():
        state.factor = factors[modality].float().numpy()
        state.biases = {r: biases[(modality, r)].float().numpy() for r in state.biases}
    return states


def _terms_per_modality(problem: Problem, config: TrainingConfig) -> dict[str, list[_LeastSquaresTerm]]:
    """Which least-squares terms fit each modality: its valued relations, else its observed-tuple ones."""
    generator = torch.Generator().manual_seed(config.seed)
    terms = {r.meta.name: _as_least_squares(r, config.negatives, generator) for r in problem.relations if r.train.nnz}
    chosen = {}
    for modality in problem.modalities:
        spanning = [terms[r.meta.name] for r in problem.relations_of(modality) if r.meta.name in terms]
        valued = [t for t, r in zip(spanning, problem.relations_of(modality)) if r.meta.loss == "squared"]
        if valued or spanning:
            chosen[modality] = valued or spanning
    return chosen


def _as_least_squares(relation: Relation, negatives: int, generator: torch.Generator) -> _LeastSquaresTerm:
    observed = relation.train
    coords, targets = observed.coords, observed.values.double()
    if relation.meta.loss == "logistic":
        unobserved = corrupt(coords, relation.meta.shape, max(negatives, 1), generator)
        coords = torch.cat([coords, unobserved], dim=1)
        targets = torch.cat([torch.ones(observed.nnz), torch.zeros(unobserved.shape[1])]).double()
    return _LeastSquaresTerm(
        name=relation.meta.name,
        modalities=relation.meta.modalities,
        coords=coords,
        targets=targets,
        offset=relation.train_mean(),
        entry_weight=relation.meta.weight / coords.shape[1],
    )


def _residual(term: _LeastSquaresTerm, factors, biases, without_bias_of: str | None = None, with_cp: bool = True):
    """targets − prediction, leaving out one modality's bias and/or the CP term."""
    mode_factors = [factors[m] if with_cp else torch.zeros_like(factors[m]) for m in term.modalities]
    mode_biases = [
        torch.zeros_like(biases[(m, term.name)]) if m == without_bias_of else biases[(m, term.name)]
        for m in term.modalities
    ]
    return term.targets - tuple_scores(mode_factors, mode_biases, term.coords, term.offset)


def _update_bias(modality: str, term: _LeastSquaresTerm, factors, biases, l2: float) -> None:
    """Closed-form ridge biases: b_i = Σ residual / (count · (1 + l2))."""
    index = term.coords[term.modalities.index(modality)]
    size = factors[modality].shape[0]
    residual = _residual(term, factors, biases, without_bias_of=modality)
    total = torch.zeros(size, dtype=torch.float64).index_add_(0, index, residual)
    count = torch.zeros(size, dtype=torch.float64).index_add_(0, index, torch.ones_like(residual))
    biases[(modality, term.name)] = total / (count * (1 + l2)).clamp_min(1e-12)


def _update_factor(
    modality: str,
    terms: list[_LeastSquaresTerm],
    factors,
    biases,
    l2: float,
    laplacian: scipy.sparse.csr_matrix | None,
    smoothing: float,
) -> None:
    """Minimise Σ_i (a_iᵀ G_i a_i − 2 a_iᵀ b_i) + smoothing · tr(AᵀLA) over the factor A, where
    G_i = Σ w h hᵀ + l2 Σ w I and b_i = Σ w r h over row i's entries (h: Khatri–Rao rows, r: residuals)."""
    size, rank = factors[modality].shape
    gram = torch.zeros(size, rank, rank, dtype=torch.float64)
    rhs = torch.zeros(size, rank, dtype=torch.float64)
    eye = torch.eye(rank, dtype=torch.float64)
    for term in terms:
        mode = term.modalities.index(modality)
        mode_factors = [factors[m] for m in term.modalities]
        residual = _residual(term, factors, biases, with_cp=False)
        ones = torch.ones_like(residual)
        counts = torch.zeros(size, dtype=torch.float64).index_add_(0, term.coords[mode], ones)
        gram += term.entry_weight * (row_gram(mode_factors, term.coords, ones, mode) + l2 * counts[:, None, None] * eye)
        rhs += term.entry_weight * mttkrp(mode_factors, term.coords, residual, mode)
    gram += 1e-9 * eye
    if laplacian is None or smoothing == 0:
        observed = gram.diagonal(dim1=1, dim2=2).sum(1) > rank * 1e-9
        factors[modality] = factors[modality].clone()
        factors[modality][observed] = torch.linalg.solve(gram[observed], rhs[observed])
    else:
        factors[modality] = _solve_graph_coupled(gram, rhs, laplacian, smoothing, factors[modality])


def _solve_graph_coupled(gram, rhs, laplacian, smoothing, start) -> torch.Tensor:
    """Solve G_i a_i + smoothing · (LA)_i = b_i for all rows at once by preconditioned conjugate gradients
    (block-Jacobi preconditioner: the per-row systems with L's diagonal)."""
    size, rank = rhs.shape
    blocks = gram.numpy()
    coupling = (smoothing * laplacian).tocsr()
    diagonal = blocks + coupling.diagonal()[:, None, None] * np.eye(rank)
    inverse = np.linalg.inv(diagonal)

    def apply(vector: np.ndarray) -> np.ndarray:
        x = vector.reshape(size, rank)
        return (np.einsum("nij,nj->ni", blocks, x) + coupling @ x).ravel()

    def precondition(vector: np.ndarray) -> np.ndarray:
        return np.einsum("nij,nj->ni", inverse, vector.reshape(size, rank)).ravel()

    shape = (size * rank, size * rank)
    solution, _ = scipy.sparse.linalg.cg(
        scipy.sparse.linalg.LinearOperator(shape, matvec=apply),
        rhs.numpy().ravel(),
        x0=start.numpy().ravel(),
        rtol=1e-6,
        maxiter=200,
        M=scipy.sparse.linalg.LinearOperator(shape, matvec=precondition),
    )
    return torch.from_numpy(solution.reshape(size, rank))
