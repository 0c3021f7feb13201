"""Cross-modal loss terms of one relation (method.md §2–§4), over its observed entries only.

A relation's score for a tuple is  μ + Σ_θ b_θ[i_θ] + Σ_r Π_θ A_θ[i_θ, r]  (μ: the train mean for ratings,
0 for observed/unobserved tuples). Squared-error relations regress values; logistic relations separate
observed tuples from sampled unobserved ones. Both add a ridge penalty on the free rows and biases each observed
entry touches, so frequent entities are regularised in proportion to their data (ALS-WR style).
The same function serves the per-modality loss (other factors frozen) and the joint loss, so their gradients
with respect to a modality's parameters agree exactly.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import torch
import torch.nn.functional as F

from hyperlearn.problem import Relation
from hyperlearn.tensor_ops import cp_predict


def tuple_scores(
    factors: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], coords: torch.Tensor, offset: float
) -> torch.Tensor:
    """Model output for each coordinate column: offset + Σ_θ b_θ[i_θ] + CP prediction."""
    total = cp_predict(factors, coords) + offset
    for mode, bias in enumerate(biases):
        total = total + bias.index_select(0, coords[mode])
    return total


def ridge(
    factors: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    coords: torch.Tensor,
    free: Sequence[bool] | None = None,
) -> torch.Tensor:
    """Mean over entries of Σ_θ (‖A_θ[i_θ]‖² + b_θ[i_θ]²), the factor part only for modes whose rows are
    free (`free[θ]`; a projected factor is regularised through its projection instead).

    Each row is weighted by its entry count, not gathered per entry: the same number for O(n·R) work."""
    total = coords.new_zeros((), dtype=factors[0].dtype)
    for mode, (factor, bias) in enumerate(zip(factors, biases)):
        counts = torch.bincount(coords[mode], minlength=factor.shape[0]).to(factor.dtype)
        squares = bias.pow(2)
        if free is None or free[mode]:
            squares = squares + factor.pow(2).sum(1)
        total = total + (counts * squares).sum()
    return total / max(coords.shape[1], 1)


def corrupt(coords: torch.Tensor, shape: Sequence[int], copies: int, generator: torch.Generator) -> torch.Tensor:
    """Negative tuples: each positive repeated `copies` times with one uniformly chosen mode replaced by a
    uniformly drawn entity."""
    repeated = coords.repeat(1, copies)
    n = repeated.shape[1]
    modes = torch.randint(len(shape), (n,), generator=generator, device="cpu").to(coords.device)
    sizes = torch.as_tensor(shape, dtype=torch.float64)[modes.cpu()]
    draws = (torch.rand(n, generator=generator, dtype=torch.float64) * sizes).long().to(coords.device)
    return repeated.scatter(0, modes[None, :], draws[None, :])


def relation_loss(
    relation: Relation,
    factors: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    offset: float,
    l2: float,
    negatives: int,
    generator: torch.Generator,
    free: Sequence[bool] | None = None,
) -> torch.Tensor:
    """Weighted cross-modal loss of one relation on its training entries; factors/biases in its mode order,
    `free` as in `ridge`."""
    observed = relation.train
    if observed.nnz == 0:
        return factors[0].new_zeros(())
    scores = tuple_scores(factors, biases, observed.coords, offset)
    if relation.meta.loss == "squared":
        fit = (observed.values - scores).pow(2).mean()
    else:
        negative = corrupt(observed.coords, relation.meta.shape, max(negatives, 1), generator)
        fit = F.softplus(-scores).mean() + F.softplus(tuple_scores(factors, biases, negative, offset)).mean()
    return relation.meta.weight * (fit + l2 * ridge(factors, biases, observed.coords, free))


def cross_modal_loss(
    relations: Sequence[Relation],
    factors: Mapping[str, torch.Tensor],
    biases: Mapping[str, Mapping[str, torch.Tensor]],
    l2: float,
    negatives: int,
    generator: torch.Generator,
    projected: Collection[str] = (),
) -> torch.Tensor:
    """Σ over relations of their weighted losses; `biases[modality][relation]` are the entity biases, and the
    `projected` modalities' factors are left out of the ridge (their projections carry weight decay)."""
    total = next(iter(factors.values())).new_zeros(())
    for relation in relations:
        names = relation.meta.modalities
        total = total + relation_loss(
            relation,
            [factors[m] for m in names],
            [biases[m][relation.meta.name] for m in names],
            relation.train_mean(),
            l2,
            negatives,
            generator,
            [m not in projected for m in names],
        )
    return total


def proximal_term(
    relations: Sequence[Relation],
    modality: str,
    factor: torch.Tensor,
    previous_factor: torch.Tensor,
    biases: Mapping[str, torch.Tensor],
    previous_biases: Mapping[str, torch.Tensor],
) -> torch.Tensor:
    """½ Σ_relations w · mean over entries of ‖A_θ[i] − A_θ^prev[i]‖² + (b_θ[i] − b_θ^prev[i])².

    Damps the Jacobi rounds of distributed training: when the modalities of one relation all correct the same
    residual at once they overshoot; pulling each towards its last published state, with the same per-entry
    weighting as the data term, removes that oscillation and vanishes at a fixed point.
    """
    total = factor.new_zeros(())
    for relation in relations:
        mode = relation.meta.modalities.index(modality)
        index = relation.train.coords[mode : mode + 1]
        delta_bias = biases[relation.meta.name] - previous_biases[relation.meta.name]
        total = total + 0.5 * relation.meta.weight * ridge([factor - previous_factor], [delta_bias], index)
    return total
