"""Which CP blocks score a relation's tuples: the model's structure, shared by training and published scoring.

A relation's score of a tuple (i_1 … i_K) is

    offset + Σ_k b_k[i_k] + Σ_blocks Σ_{c ∈ columns(block)} Π_{k ∈ axes(block)} A_{θ_k}[i_k, c]

A block over every axis using all R columns is the plain CP model ("cp"). A block over a subset of the axes is
still a CP term: the axes it leaves out carry a constant column of ones. "pairwise" splits the R columns into
one block per pair of axes — with an evaluation target, only the pairs that include the target, which is
PITF's model for tag recommendation (Rendle & Schmidt-Thieme, WSDM 2010): s(u, i, t) = ⟨U_u, Tᵁ_t⟩ + ⟨I_i, Tᴵ_t⟩
with the tag's two halves as Tᵁ and Tᴵ. A pair that excludes the target adds the same amount to every
candidate of a query, so it cannot change a ranking and is left out. For an order-2 relation both structures
are the same single block.

Pure Python over the relation's meta: no torch, so the published-file reader computes scores the same way.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hyperlearn.rundir import RelationMeta


@dataclass(frozen=True)
class Block:
    """One CP term: the product over `axes` of the factor columns start … stop−1, summed over those columns."""

    axes: tuple[int, ...]
    start: int
    stop: int


def relation_blocks(meta: RelationMeta, rank: int) -> tuple[Block, ...]:
    """The blocks of `meta.structure` at embedding width `rank`; columns are split as evenly as possible,
    earlier blocks taking the remainder."""
    everything = tuple(range(meta.order))
    if meta.structure == "cp" or meta.order == 2:
        return (Block(everything, 0, rank),)
    pairs = list(itertools.combinations(everything, 2))
    if meta.evaluation is not None:
        pairs = [pair for pair in pairs if meta.evaluation.target in pair]
    if rank < len(pairs):
        raise ValueError(f"relation {meta.name!r}: rank {rank} is too small for {len(pairs)} pairwise blocks")
    width, extra = divmod(rank, len(pairs))
    blocks, start = [], 0
    for number, pair in enumerate(pairs):
        stop = start + width + (1 if number < extra else 0)
        blocks.append(Block(pair, start, stop))
        start = stop
    return tuple(blocks)
