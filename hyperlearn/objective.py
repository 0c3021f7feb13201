"""The training objective, assembled in one place for every way of training (docs/method.md §2–§3).

    objective = Σ_relations (cross-modal term)  +  Σ_{own modalities θ} (γ · ½tr(A_θᵀ L_θ A_θ)/n_θ + projection decay)
                (+ Σ_{warm-started θ} the anchor ½ Σ_i c_i ‖A_θ[i] − A_θ^parent[i]‖², in a warm run)

A modality's trainer takes only its own modality's terms (the part of the global objective that depends on
A_θ; the others' factors are constants for it) and adds the proximal pull of distributed rounds; joint training
takes every modality's terms; the objective reported per round is the same sum at the published states, without
the anchor (it measures the fit to this run's data, comparable between warm and cold runs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from hyperlearn.config import TrainingConfig
from hyperlearn.frozen import FrozenRelation
from hyperlearn.losses import cross_modal_loss
from hyperlearn.problem import Relation
from hyperlearn.tensor_ops import sparse_product

#: A modality's own terms of the objective, as a function of its embeddings.
OwnTerms = Callable[[torch.Tensor], torch.Tensor]


def dirichlet_energy(laplacian: torch.Tensor | None, factor: torch.Tensor) -> torch.Tensor:
    """½ tr(AᵀLA) / n: how much embeddings vary across the graph's edges, per entity so its weight is scale-free
    (0 without a graph)."""
    if laplacian is None:
        return factor.new_zeros(())
    return _DirichletEnergy.apply(laplacian, factor)


class _DirichletEnergy(torch.autograd.Function):
    """½ tr(AᵀLA) / n with its gradient LA / n (L symmetric) from the forward's one sparse product, where autograd
    through the product would form a second."""

    @staticmethod
    def forward(ctx, laplacian: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        smoothed = sparse_product(laplacian, factor)
        ctx.save_for_backward(smoothed)
        ctx.rows = factor.shape[0]
        return 0.5 * (factor * smoothed).sum() / ctx.rows

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:  # type: ignore[override]
        (smoothed,) = ctx.saved_tensors
        return None, smoothed * (grad / ctx.rows)


@dataclass(frozen=True)
class Anchor:
    """What a warm-started modality is pulled towards (docs/method.md, "Warm start"): its parent's embeddings
    (the first `target.shape[0]` rows; rows of entities new in this run are free) and the pull's weight c_i on
    each of those rows (`hyperlearn.warm_start.anchor_for`)."""

    target: torch.Tensor
    row_weights: torch.Tensor


def anchor_energy(anchor: Anchor, factor: torch.Tensor) -> torch.Tensor:
    """½ Σ_i c_i ‖A[i] − A_parent[i]‖² over the parent's rows: a proximal pull towards the published version a
    warm run starts from, so that what users already read (neighbourhoods, similarities) stays put while the new
    data is fitted."""
    rows = anchor.target.shape[0]
    return 0.5 * (anchor.row_weights * (factor[:rows] - anchor.target).pow(2).sum(1)).sum()


def objective(
    relations: Sequence[Relation],
    factors: Mapping[str, torch.Tensor],
    biases: Mapping[str, Mapping[str, torch.Tensor]],
    config: TrainingConfig,
    generator: torch.Generator,
    own_terms: Mapping[str, OwnTerms],
    *,
    frozen: Mapping[str, FrozenRelation] | None = None,
    anchors: Mapping[str, Anchor] | None = None,
) -> torch.Tensor:
    """The cross-modal terms of `relations` plus the own terms of the modalities in `own_terms`, plus the anchor
    of each modality in `anchors` (a warm run's); `frozen`: a trainer's round-constant parts of its relations
    (hyperlearn.frozen)."""
    total = cross_modal_loss(relations, factors, biases, config.l2, generator, config.projected, frozen)
    for modality, terms in own_terms.items():
        total = total + terms(factors[modality])
    for modality, anchor in (anchors or {}).items():
        total = total + anchor_energy(anchor, factors[modality])
    return total
