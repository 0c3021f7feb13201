"""Cross-modal loss terms of one relation (docs/method.md §2–§4), over its observed entries only.

A relation scores a tuple through its CP blocks (hyperlearn.scores); its value model (hyperlearn.value_models)
turns the scores of its observed entries — and, for relations of observed tuples, of their sampled negatives
(hyperlearn.negatives) — into the fit term. Every relation adds a ridge penalty on the free rows and biases each
observed entry touches, so frequent entities are regularised in proportion to their data (ALS-WR style).
The same function serves the per-modality loss (other factors frozen) and the joint loss, so their gradients
with respect to a modality's parameters agree exactly. Factors and biases are passed per axis: a modality on
several axes of a relation (user × user, KG head and tail) is passed once per axis and gets both gradients.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING

import torch

from hyperlearn.negatives import SampledNegatives, corrupted_axes, sample_negatives
from hyperlearn.problem import Relation
from hyperlearn.scores import grouped_candidate_scores, replaced_axis_scores, tuple_scores
from hyperlearn.structure import Block, relation_blocks
from hyperlearn.value_models import value_model

if TYPE_CHECKING:  # hyperlearn.frozen builds on this module's ridge
    from hyperlearn.frozen import FrozenRelation


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
        total = total + mode_ridge(factor, bias, coords[mode], free is None or free[mode])
    return total / max(coords.shape[1], 1)


def mode_ridge(factor: torch.Tensor, bias: torch.Tensor, index: torch.Tensor, free: bool = True) -> torch.Tensor:
    """One mode's part of `ridge`, summed over entries (not divided by their number): Σ_i count_i · (b_i² +
    ‖A_i‖² when the rows are free), `index` the mode's coordinates of the entries."""
    counts = torch.bincount(index, minlength=factor.shape[0]).to(factor.dtype)
    squares = bias.pow(2)
    if free:
        squares = squares + factor.pow(2).sum(1)
    return (counts * squares).sum()


def relation_loss(
    relation: Relation,
    factors: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    offset: float,
    l2: float,
    generator: torch.Generator,
    free: Sequence[bool] | None = None,
    frozen: FrozenRelation | None = None,
) -> torch.Tensor:
    """Weighted cross-modal loss of one relation on its training entries; factors/biases per axis, `free` as
    in `ridge`; negatives (for relations of observed tuples) drawn from `generator`. `frozen`: the round's
    constant part for one trainer (hyperlearn.frozen), which then reads only its own axes' factors and biases."""
    observed = relation.train
    if observed.nnz == 0:
        return factors[0].new_zeros(())
    model = value_model(relation.meta)
    if frozen is not None:
        fit = model.fit(frozen.scores(factors, biases, observed.coords), observed.values, None, None)
        return relation.meta.weight * (fit + l2 * frozen.ridge(factors, biases, observed.coords, free))
    blocks = relation_blocks(relation.meta, factors[0].shape[1])
    if model.regresses_values:
        scores = tuple_scores(blocks, factors, biases, observed.coords, offset)
        fit = model.fit(scores, observed.values, None, None)
    else:
        negatives = sample_negatives(relation.meta, observed.coords, observed.coords, generator)
        scores, negative_scores = _positive_and_negative_scores(
            blocks, factors, biases, observed.coords, negatives, corrupted_axes(relation.meta), offset
        )
        fit = model.fit(scores, observed.values, negative_scores, negatives)
    return relation.meta.weight * (fit + l2 * ridge(factors, biases, observed.coords, free))


def _positive_and_negative_scores(
    blocks: Sequence[Block],
    factors: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    coords: torch.Tensor,
    negatives: SampledNegatives,
    axes: tuple[int, ...],
    offset: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of the positives (n,) and of their negatives (count, n), by the cheapest path for the draw.

    A shared candidate that is the positive's own entity is no negative: its score is −inf. Loss + backward on
    one core, 78k KG triples at rank 64 against 32 popularity-drawn tails: 2,140 ms drawn per positive, 245 ms
    drawn once per 256 positives."""
    if negatives.entities is not None:
        axis = negatives.axis
        negative = grouped_candidate_scores(blocks, factors, biases, coords, axis, negatives.entities, offset)
        groups = negatives.entities.shape[0]
        own = negatives.entities.index_select(0, torch.arange(coords.shape[1], device=coords.device) % groups)
        accidental = own.t() == coords[axis][None, :]
        return tuple_scores(blocks, factors, biases, coords, offset), negative.masked_fill(accidental, float("-inf"))
    if _shares_query_rows(blocks, axes):
        replacements = negatives.coords[axes[0]].view(negatives.count, -1)
        return replaced_axis_scores(blocks, factors, biases, coords, axes[0], replacements, offset)
    negative = tuple_scores(blocks, factors, biases, negatives.coords, offset).view(negatives.count, -1)
    return tuple_scores(blocks, factors, biases, coords, offset), negative


def _shares_query_rows(blocks: Sequence[Block], axes: tuple[int, ...]) -> bool:
    """Whether negatives are scored by `replaced_axis_scores`: one corrupted axis, only in matrix blocks
    (PITF's pairs). Measured per loss + backward on one core: tags (pairwise) 12 against 21 ms through
    `tuple_scores`; a KG triple block (order 3, 78k positives × 4 negatives) 590 against 410 ms, where the
    chunked MTTKRP of `cp_predict` beats autograd over the gathered negative rows."""
    return len(axes) == 1 and all(len(block.axes) == 2 for block in blocks if axes[0] in block.axes)


def cross_modal_loss(
    relations: Sequence[Relation],
    factors: Mapping[str, torch.Tensor],
    biases: Mapping[str, Mapping[str, torch.Tensor]],
    l2: float,
    generator: torch.Generator,
    projected: Collection[str] = (),
    frozen: Mapping[str, FrozenRelation] | None = None,
) -> torch.Tensor:
    """Σ over relations of their weighted losses; `biases[modality][relation]` are the entity biases, and the
    `projected` modalities' factors are left out of the ridge (their projections carry weight decay).
    `frozen`: a trainer's round-constant parts by relation name (hyperlearn.frozen), where it has them."""
    total = next(iter(factors.values())).new_zeros(())
    for relation in relations:
        names = relation.meta.modalities
        total = total + relation_loss(
            relation,
            [factors[m] for m in names],
            [biases[m][relation.meta.name] for m in names],
            relation.train_mean(),
            l2,
            generator,
            [m not in projected for m in names],
            (frozen or {}).get(relation.meta.name),
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
        axes = list(relation.meta.axes_of(modality))
        index = relation.train.coords[axes].reshape(1, -1)
        delta_bias = biases[relation.meta.name] - previous_biases[relation.meta.name]
        total = total + 0.5 * relation.meta.weight * ridge([factor - previous_factor], [delta_bias], index) * len(axes)
    return total
