"""The training objective, assembled in one place for every way of training (docs/method.md §2–§3).

    objective = Σ_relations (cross-modal term)  +  Σ_{own modalities θ} (γ · ½tr(A_θᵀ L_θ A_θ)/n_θ + projection decay)

A modality's trainer takes only its own modality's terms (the part of the global objective that depends on
A_θ; the others' factors are constants for it) and adds the proximal pull of distributed rounds; joint training
takes every modality's terms; the objective reported per round is the same sum at the published states.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from hyperlearn.chebconv import symmetric_sparse_product
from hyperlearn.config import TrainingConfig
from hyperlearn.frozen import FrozenRelation
from hyperlearn.losses import cross_modal_loss
from hyperlearn.problem import Relation

#: A modality's own terms of the objective, as a function of its embeddings.
OwnTerms = Callable[[torch.Tensor], torch.Tensor]


def dirichlet_energy(laplacian: torch.Tensor | None, factor: torch.Tensor) -> torch.Tensor:
    """½ tr(AᵀLA) / n: how much embeddings vary across the graph's edges, per entity so its weight is scale-free
    (0 without a graph)."""
    if laplacian is None:
        return factor.new_zeros(())
    return 0.5 * (factor * symmetric_sparse_product(laplacian, factor)).sum() / factor.shape[0]


def objective(
    relations: Sequence[Relation],
    factors: Mapping[str, torch.Tensor],
    biases: Mapping[str, Mapping[str, torch.Tensor]],
    config: TrainingConfig,
    generator: torch.Generator,
    own_terms: Mapping[str, OwnTerms],
    frozen: Mapping[str, FrozenRelation] | None = None,
) -> torch.Tensor:
    """The cross-modal terms of `relations` plus the own terms of the modalities in `own_terms`; `frozen`: a
    trainer's round-constant parts of its relations (hyperlearn.frozen)."""
    total = cross_modal_loss(relations, factors, biases, config.l2, generator, config.projected, frozen)
    for modality, terms in own_terms.items():
        total = total + terms(factors[modality])
    return total
