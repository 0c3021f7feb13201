"""Starting factors and biases: the cheap decomposition the encoders refine (docs/method.md §2).

CP-ALS on the observed entries of the regressions (never the dense tensor): each sweep solves, for every
modality in turn, its entity biases and then its factor, from MTTKRP and the per-row Gram matrices of the
Khatri–Rao rows of each CP block (hyperlearn.structure) that contains the modality's axis. Without a graph that
is one small ridge problem per entity row; with one, the Dirichlet term of the objective couples the rows (as in
GRALS) and the factor comes from one conjugate-gradient solve, which also gives entities without training data
the embedding their graph neighbours imply. Works for any order, for several relations sharing a modality, and
for a modality on several axes of one relation (each occurrence solved with the others' current values).

A modality that no regression spans (tags of a tagging log, entities of a knowledge graph) keeps its seeded
random start. Least squares on 1 for observed and 0 for sampled tuples — the start used before — has the
all-zero factors as its attracting fixed point for order ≥ 3 (every sweep shrank the factors geometrically,
into denormal numbers that made sweeps slow, and Adam cannot leave 0 for a 3-way product); a random start
breaks that symmetry, which is what the observed-tuple losses need from a start.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch
from threadpoolctl import threadpool_limits

from hyperlearn.config import TrainingConfig
from hyperlearn.problem import Problem, Relation
from hyperlearn.rundir import ModalityState
from hyperlearn.scores import block_columns, tuple_scores
from hyperlearn.seeds import start_seed
from hyperlearn.structure import Block, relation_blocks
from hyperlearn.tensor_ops import mttkrp, row_gram
from hyperlearn.value_models import value_model


@dataclass(frozen=True)
class _LeastSquaresTerm:
    """A regression seen as least squares over its training entries: targets ≈ its score (hyperlearn.scores)."""

    name: str
    modalities: tuple[str, ...]
    blocks: tuple[Block, ...]
    coords: torch.Tensor
    targets: torch.Tensor
    offset: float
    entry_weight: float


#: The standard deviation of each CP block's scores at a random start.
START_SCORE_SCALE = 0.1


def random_states(problem: Problem, config: TrainingConfig) -> dict[str, ModalityState]:
    """Seeded Gaussian factors and zero biases, each modality at the entry scale `random_scale` gives it: from
    the blocks of the regressions ALS fits it to when ALS solves it, else from every block holding one of its
    axes. So 0.1/√R per entry where those blocks are matrices, and scores of standard deviation 0.1 for a block
    of order K ≥ 3. At 0.1/√R an order-K block's scores are near (0.1/√R)^K·√R (1e-5 for a KG triple at
    R = 64): next to the zero saddle of a K-way product, where the gradient of every factor vanishes with the
    others and the model learns only its biases (KG validation MRR 0.043 at learning rate 0.05, below tail
    popularity; 0.128 from 0.2 per entry at the same rate), and where ALS's ridge outweighs the Khatri–Rao rows,
    so its first sweep shrinks every factor to 0 (a planted order-3 regression at rank 16: largest entries 1e-87,
    1e-176, 1e-267 after the three modes' updates, then exactly 0).
    A matrix block escapes a small start (its gradient is linear in the other factor), so order 2 keeps it."""
    generator = torch.Generator().manual_seed(start_seed(config.seed))
    solved = _terms_per_modality(problem, config) if config.init == "als" else {}
    states = {}
    for name, size in problem.sizes.items():
        fitted_to = {term.name for term in solved.get(name, ())}
        relations = [r for r in problem.relations_of(name) if not fitted_to or r.meta.name in fitted_to]
        factor = torch.randn(size, config.rank, generator=generator) * random_scale(relations, name, config.rank)
        biases = {r.meta.name: torch.zeros(size).numpy() for r in problem.relations_of(name)}
        states[name] = ModalityState(factor=factor.numpy(), biases=biases)
    return states


def random_scale(relations: Sequence[Relation], modality: str, rank: int) -> float:
    """The entry scale σ that gives a block of order K ≥ 3 and width w scores of standard deviation
    START_SCORE_SCALE (√w·σ^K), for the highest-order block of `relations` holding one of `modality`'s axes;
    0.1/√R when every such block is a matrix."""
    blocks = [
        block
        for relation in relations
        for block in relation_blocks(relation.meta, rank)
        if set(block.axes) & set(relation.meta.axes_of(modality))
    ]
    widest = max(blocks, key=lambda block: (len(block.axes), block.stop - block.start), default=None)
    if widest is None or len(widest.axes) < 3:
        return 0.1 / math.sqrt(rank)
    return (START_SCORE_SCALE / math.sqrt(widest.stop - widest.start)) ** (1.0 / len(widest.axes))


def initial_states(problem: Problem, config: TrainingConfig) -> dict[str, ModalityState]:
    """The starting point of training: `config.init` = "random", or "als" sweeps on top of it."""
    states = random_states(problem, config)
    if config.init == "random":
        return states
    terms = _terms_per_modality(problem, config)
    factors = {m: torch.from_numpy(s.factor).double() for m, s in states.items()}
    biases = {m: {r: torch.from_numpy(b).double() for r, b in s.biases.items()} for m, s in states.items()}
    # NumPy's BLAS keeps its threads spinning after each call, on the cores torch's threads want next, and the
    # sweeps alternate between the two hundreds of times (the graph-coupled solve is SciPy's CG): 3× slower on
    # 2 cores. The CG's vector operations need no second BLAS thread.
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(config.init_iterations):
            for modality, own_terms in terms.items():
                for term in own_terms:
                    _update_bias(modality, term, factors, biases, config.l2)
                smoothing = config.graph_weight / (2 * problem.sizes[modality])
                _update_factor(modality, own_terms, factors, biases, config.l2, problem.laplacians[modality], smoothing)
    for modality, state in states.items():
        state.factor = factors[modality].float().numpy()
        state.biases = {r: b.float().numpy() for r, b in biases[modality].items()}
    return states


def _terms_per_modality(problem: Problem, config: TrainingConfig) -> dict[str, list[_LeastSquaresTerm]]:
    """The least-squares terms fitting each modality, in the problem's modality order (the order of the
    sweeps): the regressions spanning it (none: it stays random)."""
    terms = [
        _as_least_squares(r, config.rank)
        for r in problem.relations
        if r.train.nnz and value_model(r.meta).regresses_values
    ]
    chosen = {m: [t for t in terms if m in t.modalities] for m in problem.modalities}
    return {m: own for m, own in chosen.items() if own}


def _as_least_squares(relation: Relation, rank: int) -> _LeastSquaresTerm:
    observed = relation.train
    return _LeastSquaresTerm(
        name=relation.meta.name,
        modalities=relation.meta.modalities,
        blocks=relation_blocks(relation.meta, rank),
        coords=observed.coords,
        targets=observed.values.double(),
        offset=relation.train_mean(),
        entry_weight=relation.meta.weight / observed.nnz,
    )


def _residual(
    term: _LeastSquaresTerm,
    factors,
    biases,
    without_bias_on: int | None = None,
    without_block: Block | None = None,
) -> torch.Tensor:
    """targets − score, leaving out the bias on one axis and/or one block's CP term."""
    mode_factors = [factors[m] for m in term.modalities]
    mode_biases = [
        torch.zeros_like(biases[m][term.name]) if axis == without_bias_on else biases[m][term.name]
        for axis, m in enumerate(term.modalities)
    ]
    blocks = [block for block in term.blocks if block != without_block]
    return term.targets - tuple_scores(blocks, mode_factors, mode_biases, term.coords, term.offset)


def _update_bias(modality: str, term: _LeastSquaresTerm, factors, biases, l2: float) -> None:
    """Closed-form ridge biases: b_i = Σ residual / (count · (1 + l2)), over the entries on each of the
    modality's axes (the residual leaving out the bias on that axis)."""
    size = factors[modality].shape[0]
    total = torch.zeros(size, dtype=torch.float64)
    count = torch.zeros(size, dtype=torch.float64)
    for axis in _axes_of(term, modality):
        residual = _residual(term, factors, biases, without_bias_on=axis)
        total.index_add_(0, term.coords[axis], residual)
        count.index_add_(0, term.coords[axis], torch.ones_like(residual))
    biases[modality][term.name] = total / (count * (1 + l2)).clamp_min(1e-12)


def _axes_of(term: _LeastSquaresTerm, modality: str) -> list[int]:
    return [axis for axis, name in enumerate(term.modalities) if name == modality]


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
    G_i = Σ w h hᵀ + l2 Σ w I and b_i = Σ w r h over row i's entries (h: Khatri–Rao rows of a block containing
    the modality's axis, on that block's columns; r: residuals leaving that block out). With several blocks the
    Gram matrix is block-diagonal over their columns, so each block's columns are refitted given the others'."""
    size, rank = factors[modality].shape
    gram = torch.zeros(size, rank, rank, dtype=torch.float64)
    rhs = torch.zeros(size, rank, dtype=torch.float64)
    eye = torch.eye(rank, dtype=torch.float64)
    for term in terms:
        term_gram = torch.zeros(size, rank, rank, dtype=torch.float64)
        term_rhs = torch.zeros(size, rank, dtype=torch.float64)
        counts = torch.zeros(size, dtype=torch.float64)
        for axis in _axes_of(term, modality):
            counts.index_add_(0, term.coords[axis], torch.ones(term.coords.shape[1], dtype=torch.float64))
            for block in term.blocks:
                if axis not in block.axes:
                    continue
                mode = block.axes.index(axis)
                block_factors = [block_columns(factors[term.modalities[k]], block) for k in block.axes]
                block_coords = term.coords[list(block.axes)]
                residual = _residual(term, factors, biases, without_block=block)
                columns = slice(block.start, block.stop)
                term_gram[:, columns, columns] += row_gram(block_factors, block_coords, torch.ones_like(residual), mode)
                term_rhs[:, columns] += mttkrp(block_factors, block_coords, residual, mode)
        gram += term.entry_weight * (term_gram + l2 * counts[:, None, None] * eye)
        rhs += term.entry_weight * term_rhs
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
