"""A relation's score of tuples through its CP blocks (hyperlearn.structure): the one definition of the model's
output, shared by the losses, the starts and evaluation.

    score(i_1 … i_K) = offset + Σ_k b_k[i_k] + Σ_blocks Σ_{c ∈ block columns} Π_{k ∈ block axes} A_k[i_k, c]

`factors` and `biases` are given per axis (a modality on two axes appears twice, the same tensor), so autograd
sends the gradient of both axes to the one factor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hyperlearn.structure import Block
from hyperlearn.tensor_ops import cp_predict


def block_columns(factor: torch.Tensor, block: Block) -> torch.Tensor:
    """The factor's columns of `block`; the factor itself when the block spans all of them (the "cp" case), so
    that structure keeps the fast paths of `cp_predict` on unsliced storage."""
    if block.start == 0 and block.stop == factor.shape[1]:
        return factor
    return factor[:, block.start : block.stop]


def block_coords(coords: torch.Tensor, block: Block) -> torch.Tensor:
    """The coordinate rows of `block`'s axes; `coords` itself when the block spans every axis in order, so that
    a relation's entries stay one tensor from step to step (`cp_predict` remembers a matrix's cells per tensor)."""
    if block.axes == tuple(range(coords.shape[0])):
        return coords
    return coords[list(block.axes)]


def tuple_scores(
    blocks: Sequence[Block],
    factors: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    coords: torch.Tensor,
    offset: float,
) -> torch.Tensor:
    """Score of each coordinate column (K, n) → (n,): the blocks' CP terms + offset + biases (summed in that
    order, which for one "cp" block is the order the rating results were measured with)."""
    total = sum(
        cp_predict([block_columns(factors[axis], block) for axis in block.axes], block_coords(coords, block))
        for block in blocks
    )
    total = total + offset
    for axis, bias in enumerate(biases):
        total = total + bias.index_select(0, coords[axis])
    return total


def candidate_scores(
    blocks: Sequence[Block],
    factors: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    contexts: torch.Tensor,
    target: int,
    offset: float,
) -> torch.Tensor:
    """Scores of every entity on axis `target` for each query: (B, N_target) for `contexts` (K, B), whose row
    `target` is ignored. One dense product per block instead of B·N gathered tuples."""
    total = _context_part(biases, contexts, target, offset)[:, None] + biases[target][None, :]
    for block in blocks:
        product = _query_rows(factors, block, contexts, target)
        if target in block.axes:
            total = total + product @ block_columns(factors[target], block).t()
        else:
            total = total + product.sum(1, keepdim=True)
    return total


def replaced_axis_scores(
    blocks: Sequence[Block],
    factors: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    coords: torch.Tensor,
    axis: int,
    replacements: torch.Tensor,
    offset: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of the tuples `coords` (K, n), (n,), and of the same tuples with the entity on `axis` replaced by
    each row of `replacements` (count, n), (count, n): a relation's positives and its negatives of one
    corrupted axis. Each positive's part without `axis` (the other biases, the blocks without it, and per block
    with it the product of its other rows) is computed once and shared by its negatives, instead of
    re-gathering every row of every negative."""
    shared = _context_part(biases, coords, axis, offset)
    positive = shared + biases[axis].index_select(0, coords[axis])
    flat = replacements.reshape(-1)
    negative = shared[None, :] + biases[axis].index_select(0, flat).view(replacements.shape)
    for block in blocks:
        if axis not in block.axes:
            term = cp_predict([block_columns(factors[k], block) for k in block.axes], block_coords(coords, block))
            positive, negative = positive + term, negative + term[None, :]
            continue
        query = _query_rows(factors, block, coords, axis)
        columns = block_columns(factors[axis], block)
        positive = positive + (query * columns.index_select(0, coords[axis])).sum(1)
        drawn = columns.index_select(0, flat).view(*replacements.shape, -1)
        negative = negative + (drawn * query[None]).sum(-1)  # 4× faster than the einsum's batched matvecs
    return positive, negative


def grouped_candidate_scores(
    blocks: Sequence[Block],
    factors: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    coords: torch.Tensor,
    axis: int,
    candidates: torch.Tensor,
    offset: float,
) -> torch.Tensor:
    """Scores (count, n) of the tuples `coords` (K, n) with the entity on `axis` replaced by each candidate of
    their group: row g of `candidates` (G, count) serves the tuples e with e mod G = g. The candidates' rows are
    gathered once per group and met by the tuples' query rows in one batched matrix product, where scoring
    every corrupted tuple would gather count·n rows."""
    groups, count = candidates.shape
    n = coords.shape[1]
    per_query = _context_part(biases, coords, axis, offset)
    queries, columns = [], []
    for block in blocks:
        if axis not in block.axes:
            block_factors = [block_columns(factors[k], block) for k in block.axes]
            per_query = per_query + cp_predict(block_factors, block_coords(coords, block))
            continue
        queries.append(_query_rows(factors, block, coords, axis))
        columns.append(block_columns(factors[axis], block))
    flat = candidates.reshape(-1)
    per_group = -(-n // groups)
    padded = torch.nn.functional.pad(torch.cat(queries, dim=1), (0, 0, 0, per_group * groups - n))
    rows = torch.cat(columns, dim=1).index_select(0, flat).view(groups, count, -1)
    products = torch.bmm(padded.view(per_group, groups, -1).transpose(0, 1), rows.transpose(1, 2))
    products = products.transpose(0, 1).reshape(per_group * groups, count)[:n]
    candidate_bias = biases[axis].index_select(0, flat).view(groups, count).repeat(per_group, 1)[:n]
    return (products + candidate_bias + per_query[:, None]).t()


def _context_part(biases: Sequence[torch.Tensor], coords: torch.Tensor, axis: int, offset: float) -> torch.Tensor:
    """offset + Σ_{k ≠ axis} b_k[coords[k]], (n,): the bias part of a score that the entity on `axis` leaves
    unchanged, shared by every candidate for that axis."""
    total = coords.new_zeros(coords.shape[1], dtype=biases[axis].dtype) + offset
    for other, bias in enumerate(biases):
        if other != axis:
            total = total + bias.index_select(0, coords[other])
    return total


def _query_rows(factors: Sequence[torch.Tensor], block: Block, coords: torch.Tensor, axis: int) -> torch.Tensor:
    """Π over `block`'s axes other than `axis` of their rows at `coords`, (n, block width): what meets the
    columns of the entity on `axis` (all the block's rows when it does not span `axis`)."""
    query = None
    for k in block.axes:
        if k != axis:
            rows = block_columns(factors[k], block).index_select(0, coords[k])
            query = rows if query is None else query * rows
    if query is None:
        raise ValueError(f"a block needs at least one axis besides axis {axis}")
    return query
