"""Sampled unobserved tuples of a relation, as `RelationMeta.negatives` says (docs/method.md §2).

Each positive gets `count` negatives. A negative copies its positive and replaces the entity on one axis: the
axis is one of `negatives.axes` (default: the evaluation target's axis when the relation has one — the axis
that is ranked — else any axis), chosen uniformly per negative; the entity is drawn uniformly, or in proportion
to its training frequency on that axis plus one (so every entity can be drawn and has a finite log-Q). All draws
come from a CPU generator, so a seed gives the same negatives on any device.

Per positive (`negatives.shared_by` 1, the default), every negative is drawn for its own positive and laid out
copy-major: column c·n + e is the c-th negative of positive e. Shared (`shared_by` s > 1, one corrupted axis),
the positives fall into G = ⌈n / s⌉ groups (positive e in group e mod G) and each group's `count` entities replace
the axis's entity of every positive in it, as a sampled softmax over a shared candidate set does (Jean et al.
2015): the negatives' scores are then one batched product of the positives' rows with their group's candidate
rows (hyperlearn.scores.grouped_candidate_scores) instead of count·n gathered tuples.
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
    """`count` negatives for each of n positives. Per positive: `coords` (K, count·n), copy-major. Shared:
    `coords` None, and row g of `entities` (G, count) replaces the entity on `axis` of the positives e with
    e mod G = g.

    `log_q` and `positive_log_q` broadcast to (count, n): log Q of each drawn entity under its axis's sampling
    distribution, and of the positive's own entity on the axis that negative corrupted — the corrections of a
    sampled softmax. Both are zeros under uniform sampling (a constant log-Q cancels)."""

    count: int
    log_q: torch.Tensor
    positive_log_q: torch.Tensor
    coords: torch.Tensor | None = None
    axis: int | None = None
    entities: torch.Tensor | None = None


def sample_negatives(
    meta: RelationMeta, train_coords: torch.Tensor, positives: torch.Tensor, generator: torch.Generator
) -> SampledNegatives:
    """`meta.negatives.count` negatives for each column of `positives`, popularity taken from `train_coords`."""
    axes = corrupted_axes(meta)
    for axis in axes:
        if not 0 <= axis < meta.order:
            raise ValueError(f"relation {meta.name!r}: negatives.axes names axis {axis}, it has {meta.order} axes")
    count = max(meta.negatives.count, 1)
    if meta.negatives.shared_by > 1:
        if len(axes) != 1:
            raise ValueError(
                f"relation {meta.name!r}: shared negatives replace one axis, but negatives corrupt axes {list(axes)}; "
                "set negatives.axes to one axis or give the relation an evaluation target"
            )
        return _shared_negatives(meta, axes[0], count, train_coords, positives, generator)
    return _negatives_per_positive(meta, axes, count, train_coords, positives, generator)


def _negatives_per_positive(
    meta: RelationMeta,
    axes: tuple[int, ...],
    count: int,
    train_coords: torch.Tensor,
    positives: torch.Tensor,
    generator: torch.Generator,
) -> SampledNegatives:
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
            probability = _popularity(meta, axis, train_coords)
            drawn = _draw(probability, uniform[picked])
            log_probability = probability.log()
            log_q[picked] = log_probability[drawn]
            positive_log_q[picked] = log_probability[repeated[axis].cpu()[picked]]
            draws[picked] = drawn
    else:
        sizes = torch.as_tensor([meta.shape[axis] for axis in axes], dtype=torch.float64)
        draws = (uniform * sizes[choice]).long()
    device = positives.device
    coords = repeated.scatter(0, chosen_axes.to(device)[None, :], draws.to(device)[None, :])
    return SampledNegatives(
        count=count,
        log_q=log_q.to(device, torch.float32).view(count, -1),
        positive_log_q=positive_log_q.to(device, torch.float32).view(count, -1),
        coords=coords,
    )


def _shared_negatives(
    meta: RelationMeta,
    axis: int,
    count: int,
    train_coords: torch.Tensor,
    positives: torch.Tensor,
    generator: torch.Generator,
) -> SampledNegatives:
    n = positives.shape[1]
    groups = max(-(-n // meta.negatives.shared_by), 1)
    uniform = torch.rand(groups * count, generator=generator, dtype=torch.float64)
    if meta.negatives.distribution == "popularity":
        probability = _popularity(meta, axis, train_coords)
        entities = _draw(probability, uniform).view(groups, count)
        log_probability = probability.log()
        group = torch.arange(n) % groups
        log_q = log_probability[entities].t().index_select(1, group)
        positive_log_q = log_probability[positives[axis].cpu()][None, :]
    else:
        entities = (uniform * meta.shape[axis]).long().view(groups, count)
        log_q, positive_log_q = torch.zeros(count, 1, dtype=torch.float64), torch.zeros(1, n, dtype=torch.float64)
    device = positives.device
    return SampledNegatives(
        count=count,
        log_q=log_q.to(device, torch.float32),
        positive_log_q=positive_log_q.to(device, torch.float32),
        axis=axis,
        entities=entities.to(device),
    )


def _popularity(meta: RelationMeta, axis: int, train_coords: torch.Tensor) -> torch.Tensor:
    """Q over the entities of `axis`: training frequency plus one, normalised (float64, on the CPU)."""
    frequency = torch.bincount(train_coords[axis].cpu(), minlength=meta.shape[axis]).double() + 1.0
    return frequency / frequency.sum()


def _draw(probability: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Entities drawn by inverting the cumulative distribution at `uniform` draws in [0, 1)."""
    cumulative = probability.cumsum(0)
    return torch.searchsorted(cumulative, uniform * cumulative[-1], right=True).clamp_max(probability.numel() - 1)
