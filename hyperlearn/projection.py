"""Projected starting factors: A⁰_θ = σ(X_(θ) P_θ + c_θ), a learned projection of the mode-θ unfolding.

Truncated SVD, the method's cheap decomposition for K = 2, computes its left factor as a linear projection of
the matrix it decomposes (U = X V Σ⁻¹). A projected modality learns that projection instead, squashed by a
sigmoid, as the encoder of I-AutoRec does: an entity's starting embedding becomes a function of its observed
entries rather than a free row, so rarely observed entities share the statistical strength of one projection.
That is what lets a large rank generalise where free rows over-fit.

For a relation of any order the unfolding's columns are projected mode by mode: X_(θ) P becomes
Σ_{k≠θ} M_θk P_k, where M_θk (n_θ × n_k, sparse) sums the observed values over the remaining modes; for
K = 2 that is exactly X P. Only the relation's observed entries enter, and no other modality's factor does,
so a modality's parameters stay its own and per-modality training (docs/method.md §3) is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hyperlearn.problem import Relation
from hyperlearn.tensor_ops import MatrixCells, cells_product

INITIAL_SCALE = 0.01  # small, so that every entity starts near σ(0) = ½ whatever its number of entries


def mode_marginals(relation: Relation, modality: str, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """For each axis a of `modality` and each other axis k of `relation`: M_ak as a CSR tensor,
    M_ak[i, j] = Σ values of the training entries with i_a = i and i_k = j, keyed "a_k" (a modality on two
    axes, as in a user × user relation, projects both of its roles)."""
    observed = relation.train
    marginals = {}
    for own in relation.meta.axes_of(modality):
        for mode in range(relation.meta.order):
            if mode == own:
                continue
            shape = (relation.meta.shape[own], relation.meta.shape[mode])
            index = observed.coords[[own, mode]].cpu()
            coo = torch.sparse_coo_tensor(index, observed.values.cpu(), shape, check_invariants=True).coalesce()
            marginals[f"{own}_{mode}"] = coo.to_sparse_csr().to(device)
    return marginals


class UnfoldingProjection(nn.Module):
    """A⁰ = σ(Σ_relations Σ_{k≠θ} M_θk P_k + c): the starting factor of a projected modality.

    In training mode each forward pass drops every observed entry of the marginals with probability `dropout`
    (and scales the rest by 1/(1 − dropout)), so an embedding must hold up when some of the entity's entries
    are missing, as a denoising autoencoder's code does; in eval mode all entries are used."""

    def __init__(
        self,
        relations: Sequence[Relation],
        modality: str,
        rank: int,
        dropout: float = 0.0,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        self.dropout = dropout
        self.generator = torch.Generator().manual_seed(seed)
        self.marginals = {r.meta.name: mode_marginals(r, modality, device) for r in relations}
        self.cells = {
            relation: {name: MatrixCells.of_csr(marginal) for name, marginal in per_mode.items()}
            for relation, per_mode in self.marginals.items()
        }
        self.weights = nn.ParameterDict()
        for relation in relations:
            for name, marginal in self.marginals[relation.meta.name].items():
                weight = torch.empty(marginal.shape[1], rank, device=device)
                nn.init.normal_(weight, std=INITIAL_SCALE)
                self.weights[_key(relation.meta.name, name)] = nn.Parameter(weight)
        self.offset = nn.Parameter(torch.zeros(rank, device=device))
        self.penalty_scale = {r.meta.name: r.meta.weight / max(r.train.nnz, 1) for r in relations}

    def forward(self) -> torch.Tensor:
        total = self.offset
        for relation, per_mode in self.marginals.items():
            for name, marginal in per_mode.items():
                cells, shape = self.cells[relation][name], tuple(marginal.shape)
                weight = self.weights[_key(relation, name)]
                total = total + cells_product(cells, shape, self._dropped(marginal.values()), weight)
        return torch.sigmoid(total)

    def _dropped(self, values: torch.Tensor) -> torch.Tensor:
        """A marginal's values with entries dropped at rate `dropout` in training mode (a CPU draw, so runs
        repeat)."""
        if not self.training or self.dropout == 0.0:
            return values
        keep = torch.rand(values.shape, generator=self.generator) >= self.dropout
        return values * keep.to(values.device) / (1.0 - self.dropout)

    def weight_penalty(self) -> torch.Tensor:
        """½ Σ w ‖P_k‖² / nnz over its relations: weight decay on the per-entry scale of the data term, so
        `projection_l2` means what I-AutoRec's λ means for a sum of squared errors."""
        total = self.offset.new_zeros(())
        for relation, per_mode in self.marginals.items():
            for name in per_mode:
                weight = self.weights[_key(relation, name)]
                total = total + 0.5 * self.penalty_scale[relation] * weight.pow(2).sum()
        return total


def _key(relation: str, axes: str) -> str:
    return f"{relation}__{axes}"
