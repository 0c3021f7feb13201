"""Every random stream of a run, named and derived from the one `training.seed`.

Each stream gets its own generator, seeded by its purpose and (where it is per modality) the modality's name,
never by a worker's address or a process, so joint and distributed runs draw the same numbers and the same seed
and inputs give the same embeddings.
"""

from __future__ import annotations

import zlib


def _mixed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**31


def model_seed(seed: int, modality: str) -> int:
    """A modality's weights (encoder, projection) and its projection-dropout draws."""
    return _mixed(seed, modality)


def negatives_seed(seed: int, owner: str) -> int:
    """The negatives a trainer samples while training: `owner` is its modality, or "joint" for joint training."""
    return _mixed(seed + 1, owner)


def start_seed(seed: int) -> int:
    """The starting factors and the negatives the start fits."""
    return seed


def evaluation_seed(seed: int) -> int:
    """Negatives drawn for held-out losses and metrics: the same every round, so rounds compare fairly."""
    return seed
