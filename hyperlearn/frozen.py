"""The part of a regression's loss that one distributed round holds fixed, formed once per round (docs/method.md §3).

In a round a trainer takes `local_steps` steps on its own modality θ while every other modality's state stays as
published. For a relation's training entries the other axes' contribution to a score is then the same at every
step: per CP block, the product of the frozen axes' factor rows at each entry, and outside the blocks the offset,
the frozen axes' biases and their ridge. `freeze` forms these once; `FrozenRelation.scores` and `.ridge` then
give the same scores and penalty as `hyperlearn.scores.tuple_scores` and `hyperlearn.losses.ridge` as functions
of θ's factor and biases alone, so a step costs O(nnz·R) whatever the relation's order, where recomputing the
K-way product cost O(nnz·K·R) — forward and backward — at every step of every trainer.

Only where it saves work: a regression (relations of observed tuples draw new negatives every step) with a block
holding at least two frozen axes. A matrix keeps `cp_predict`'s sampled product (one frozen axis: there is no
product to reuse, and gathering its rows per entry is slower at large rank), and its numbers stay bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hyperlearn.losses import mode_ridge
from hyperlearn.problem import Relation
from hyperlearn.scores import block_columns
from hyperlearn.structure import Block, relation_blocks
from hyperlearn.value_models import value_model


@dataclass(frozen=True)
class FrozenBlock:
    """One CP block seen from the trainer: its axes of the own modality, and the product over its other axes of
    their factor columns at each training entry (nnz, width); None when the block has no other axis."""

    block: Block
    own_axes: tuple[int, ...]
    product: torch.Tensor | None


@dataclass(frozen=True)
class FrozenRelation:
    """A regression's training scores and ridge as functions of the own modality's factor and biases.

    `constant`: per entry, offset + the frozen axes' biases + the blocks without an own axis; `blocks`: those
    with one; `frozen_ridge`: the frozen axes' ridge, summed over entries (not yet divided by nnz)."""

    own_axes: tuple[int, ...]
    constant: torch.Tensor
    blocks: tuple[FrozenBlock, ...]
    frozen_ridge: torch.Tensor

    def scores(self, factors: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], coords: torch.Tensor) -> torch.Tensor:
        """`tuple_scores` of the training entries `coords`, reading only the own axes of `factors`/`biases`."""
        total = self.constant
        for frozen in self.blocks:
            term = frozen.product
            for axis in frozen.own_axes:
                rows = block_columns(factors[axis], frozen.block).index_select(0, coords[axis])
                term = rows if term is None else term * rows
            total = total + term.sum(1)
        for axis in self.own_axes:
            total = total + biases[axis].index_select(0, coords[axis])
        return total

    def ridge(
        self,
        factors: Sequence[torch.Tensor],
        biases: Sequence[torch.Tensor],
        coords: torch.Tensor,
        free: Sequence[bool] | None,
    ) -> torch.Tensor:
        """`hyperlearn.losses.ridge` of the entries: the frozen axes' part from the round's start, the own axes'
        part from `factors`/`biases` now."""
        total = self.frozen_ridge
        for axis in self.own_axes:
            total = total + mode_ridge(factors[axis], biases[axis], coords[axis], free is None or free[axis])
        return total / max(coords.shape[1], 1)


def freeze(
    relation: Relation,
    modality: str,
    factors: Sequence[torch.Tensor | None],
    biases: Sequence[torch.Tensor | None],
    free: Sequence[bool] | None = None,
) -> FrozenRelation | None:
    """The round-constant part of `relation`'s loss for the trainer of `modality`, from the other axes' published
    factors and biases (per axis; the own axes' entries are not read and may be None); None where it would save
    nothing."""
    own_axes = tuple(relation.meta.axes_of(modality))
    if not value_model(relation.meta).regresses_values or len(own_axes) > relation.meta.order - 2:
        return None
    reference = next(factor for axis, factor in enumerate(factors) if axis not in own_axes)
    blocks = relation_blocks(relation.meta, reference.shape[1])
    if not any(sum(axis not in own_axes for axis in block.axes) >= 2 for block in blocks):
        return None
    coords = relation.train.coords
    with torch.no_grad():
        constant = coords.new_zeros(coords.shape[1], dtype=reference.dtype) + relation.train_mean()
        frozen_blocks = []
        for block in blocks:
            product = None
            for axis in block.axes:
                if axis not in own_axes:
                    rows = block_columns(factors[axis], block).index_select(0, coords[axis])
                    product = rows if product is None else product * rows
            own_in_block = tuple(axis for axis in block.axes if axis in own_axes)
            if own_in_block:
                frozen_blocks.append(FrozenBlock(block, own_in_block, product))
            else:
                constant = constant + product.sum(1)
        frozen_ridge = constant.new_zeros(())
        for axis, (factor, bias) in enumerate(zip(factors, biases)):
            if axis not in own_axes:
                constant = constant + bias.index_select(0, coords[axis])
                frozen_ridge = frozen_ridge + mode_ridge(factor, bias, coords[axis], free is None or free[axis])
    return FrozenRelation(own_axes, constant, tuple(frozen_blocks), frozen_ridge)
