"""Sampled unobserved tuples of a relation, as `RelationMeta.negatives` says (docs/method.md §2).

Each positive gets `count` negatives. A negative copies its positive and replaces the entity on one axis: the
axis is one of `negatives.axes` (default: the evaluation target's axis when the relation has one — the axis
that is ranked — else any axis), chosen uniformly per negative; the entity is drawn uniformly, or in proportion
to its training frequency on that axis plus one (so every entity can be drawn and has a finite log-Q). All draws
come from a CPU generator, so a seed gives the same negatives on any device.

Negatives are laid out copy-major: column c·n + e is the c-th negative of positive e, so `.view(count, n)` of
any per-negative tensor lines each positive up with its own negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hyperlearn.rundir import RelationMeta


def corrupted_axes(meta: RelationMeta) -> tuple[int, ...]:
    """The axes whose entity a negative replaces."""
    if meta.negatives.axes is not None:
        return tuple(meta.negatives.axes)
    if meta.evaluation is not None:
        return (meta.evaluation.target,)
    return tuple(range(meta.order))


@dataclass(frozen=True)
class SampledNegatives:
    """`coords` (K, count·n) copy-major; `log_q` (count·n): log Q of each drawn entity under its axis's sampling
    distribution, and `positive_log_q` (count·n): log Q of the positive's own entity on the axis that negative
    corrupted — the corrections of a sampled softmax. Both are zeros under uniform sampling (a constant log-Q
    cancels)."""

    coords: torch.Tensor
    log_q: torch.Tensor
    positive_log_q: torch.Tensor
    count: int


def sample_negatives(
    meta: RelationMeta, train_coords: torch.Tensor, positives: torch.Tensor, generator: torch.Generator
) -> SampledNegatives:
    """`meta.negatives.count` negatives for each column of `positives`, popularity taken from `train_coords`."""
    axes = corrupted_axes(meta)
    for axis in axes:
        if not 0 <= axis < meta.order:
            raise ValueError(f"relation {meta.name!r}: negatives.axes names axis {axis}, it has {meta.order} axes")
    count = max(meta.negatives.count, 1)
    repeated = positives.repeat(1, count)
    n = repeated.shape[1]
    if len(axes) == 1:
        choice = torch.zeros(n, dtype=torch.int64)
    else:
        choice = torch.randint(len(axes), (n,), generator=generator, device="cpu")
    chosen_axes = torch.as_tensor(axes, dtype=torch.int64)[choice]
    uniform = torch.rand(n, generator=generator, dtype=torch.float64)
    log_q = torch.zeros(n, dtype=torch.float64)
    positive_log_q = torch.zeros(n, dtype=torch.float64)
    if meta.negatives.distribution == "popularity":
        draws = torch.empty(n, dtype=torch.int64)
        for number, axis in enumerate(axes):
            picked = choice == number
            size = meta.shape[axis]
            frequency = torch.bincount(train_coords[axis].cpu(), minlength=size).double() + 1.0
            probability = frequency / frequency.sum()
            cumulative = probability.cumsum(0)
            drawn = torch.searchsorted(cumulative, uniform[picked] * cumulative[-1], right=True).clamp_max(size - 1)
            log_probability = probability.log()
            log_q[picked] = log_probability[drawn]
            positive_log_q[picked] = log_probability[repeated[axis].cpu()[picked]]
            draws[picked] = drawn
    else:
        sizes = torch.as_tensor([meta.shape[axis] for axis in axes], dtype=torch.float64)
        draws = (uniform * sizes[choice]).long()
    device = positives.device
    coords = repeated.scatter(0, chosen_axes.to(device)[None, :], draws.to(device)[None, :])
    dtype = torch.float32
    return SampledNegatives(
        coords=coords,
        log_q=log_q.to(device, dtype),
        positive_log_q=positive_log_q.to(device, dtype),
        count=count,
    )
