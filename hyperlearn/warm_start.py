"""Warm start: a run's starting point taken from a published parent version (docs/design.md, "Warm start").

A retraining run — more data, a new modality — should not throw away what the last published version learned.
`warm_start` maps the parent's arrays onto the new problem:

- every entity the parent knew keeps its row (entity ids are stable through the catalog, so row i of the
  parent is row i now; the keys are checked to agree) and its bias in every relation the parent had;
- a modality whose entities are exactly the parent's also resumes its encoder: its free rows and encoder
  weights are the parent's, so its round-0 embeddings are the parent's embeddings;
- the rest — rows of new entities, whole new modalities, biases in new relations — start from the seeded
  random start and are then fitted by `warm_fit_steps` Adam steps on the training objective with every
  known row and bias frozen, so that they fit the old factors before the rounds move anything (only the
  relations with an entry on such a row or bias take part: the others would cost a full pass for nothing);
- while training, every warm-started modality is pulled towards its parent's embeddings by the anchor
  (`hyperlearn.objective.anchor_energy`, weight `warm_anchor`; `anchors_for` builds it): rows move where the
  new data asks them to and otherwise keep the neighbourhoods the parent published.

A parent whose rank differs, whose keys disagree with the catalog, or which shares no modality with the run is
incompatible (`IncompatibleParent`): the caller starts cold and logs the reason. Pure: the result depends only
on the parent's arrays, the problem and the settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hyperlearn.config import TrainingConfig
from hyperlearn.encoder import FactorEncoder
from hyperlearn.model import ModalityModel, adam
from hyperlearn.objective import Anchor, dirichlet_energy, objective
from hyperlearn.chebconv import to_torch_csr
from hyperlearn.problem import Problem, Relation
from hyperlearn.rundir import ModalityState
from hyperlearn.seeds import start_seed
from hyperlearn.snapshots import module_arrays
from hyperlearn.start import random_states

#: The key of a modality's free rows (A⁰, before the encoder) among its resumable weights.
BASE_ROWS = "base.rows"
#: The prefix of its encoder's weights.
ENCODER_PREFIX = "encoder."
#: Adam's step size for fitting the new parts against the frozen old ones: the fit starts from O(0.1) random
#: rows and has only `warm_fit_steps` steps, far fewer than training, so it moves faster than training does.
FIT_LEARNING_RATE = 0.05


class IncompatibleParent(ValueError):
    """A parent version that cannot seed this run; the message says why (the run then starts cold)."""


@dataclass(frozen=True)
class ParentModality:
    """What a parent version holds for one modality: the key of each entity id (row), its embeddings, its biases
    per relation, and its resumable weights (free rows and encoder, `BASE_ROWS` / `ENCODER_PREFIX` keys) when the
    version has them."""

    keys: np.ndarray
    embeddings: np.ndarray
    biases: dict[str, np.ndarray]
    weights: dict[str, np.ndarray] | None = None


@dataclass(frozen=True)
class ParentModel:
    """A published version's arrays, as `warm_start` needs them."""

    version: str
    rank: int
    modalities: dict[str, ParentModality]


@dataclass(frozen=True)
class WarmStart:
    """The starting states of a warm run, the encoder weights its trainers resume (modality → weights), the
    parent's embeddings its warm-started modalities are anchored to (modality → the parent's rows), and what the
    manifest records: the parent version, the modalities started from it and those new in this run."""

    parent: str
    states: dict[str, ModalityState]
    encoders: dict[str, dict[str, np.ndarray]]
    warm_started: tuple[str, ...]
    new: tuple[str, ...]
    anchors: dict[str, np.ndarray]


def warm_start(
    parent: ParentModel, problem: Problem, keys: dict[str, np.ndarray], config: TrainingConfig
) -> WarmStart:
    """The start of `problem` (whose entity keys per modality, by id, are `keys`) from `parent`; raise
    IncompatibleParent when the parent cannot seed it."""
    _check_compatible(parent, problem, keys, config)
    known = [m for m in problem.modalities if m in parent.modalities]
    states = random_states(problem, config)
    frozen_rows: dict[str, int] = {}
    frozen_biases: dict[str, dict[str, int]] = {}
    encoders: dict[str, dict[str, np.ndarray]] = {}
    for modality in known:
        old = parent.modalities[modality]
        rows = old.embeddings.shape[0]
        states[modality].factor[:rows] = old.embeddings
        frozen_rows[modality] = rows
        frozen_biases[modality] = {}
        for relation, bias in old.biases.items():
            if relation in states[modality].biases:
                states[modality].biases[relation][:rows] = bias
                frozen_biases[modality][relation] = rows
        resumable = _resumable_encoder(modality, old, problem, config)
        if resumable is not None:
            encoders[modality] = resumable
    _fit_new_parts(problem, states, frozen_rows, frozen_biases, config)
    for modality, weights in encoders.items():  # their embeddings come from the resumed rows through the encoder
        states[modality].factor = weights[BASE_ROWS].astype(np.float32)
    return WarmStart(
        parent=parent.version,
        states=states,
        encoders={m: {k: v for k, v in w.items() if k.startswith(ENCODER_PREFIX)} for m, w in encoders.items()},
        warm_started=tuple(known),
        new=tuple(m for m in problem.modalities if m not in parent.modalities),
        anchors={m: np.asarray(parent.modalities[m].embeddings, dtype=np.float32) for m in known},
    )


def anchor_for(
    relations: Sequence[Relation], modality: str, target: np.ndarray, config: TrainingConfig,
    device: torch.device | str = "cpu",
) -> Anchor:
    """The anchor of `modality` towards `target` (its parent's rows): row i weighs
    c_i = warm_anchor · Σ_{relations ∋ θ} w · (θ's entries on row i) / (the relation's entries), the weight the
    data terms (means over entries) and the ridge give that row, so the pull is in proportion to the data pulling
    the row away, for rare and frequent entities alike, and `warm_anchor` is scale-free."""
    rows = target.shape[0]
    weights = torch.zeros(rows, dtype=torch.float64)
    for relation in relations:
        observed = relation.train
        if modality not in relation.meta.modalities or observed.nnz == 0:
            continue
        coords = observed.coords[list(relation.meta.axes_of(modality))].reshape(-1).cpu()
        counts = torch.bincount(coords[coords < rows], minlength=rows).to(torch.float64)
        weights += relation.meta.weight * counts / observed.nnz
    return Anchor(
        target=torch.as_tensor(target, dtype=torch.float32, device=device),
        row_weights=(config.warm_anchor * weights).to(dtype=torch.float32, device=device),
    )


def anchors_for(
    targets: dict[str, np.ndarray], relations: Sequence[Relation], config: TrainingConfig,
    device: torch.device | str = "cpu",
) -> dict[str, Anchor]:
    """`anchor_for` each modality in `targets` (`WarmStart.anchors`, or the part a trainer owns); none when
    `warm_anchor` is 0."""
    if config.warm_anchor == 0:
        return {}
    return {m: anchor_for(relations, m, target, config, device) for m, target in targets.items()}


def _check_compatible(
    parent: ParentModel, problem: Problem, keys: dict[str, np.ndarray], config: TrainingConfig
) -> None:
    if parent.rank != config.rank:
        raise IncompatibleParent(f"parent {parent.version} has rank {parent.rank}, this run rank {config.rank}")
    shared = [m for m in problem.modalities if m in parent.modalities]
    if not shared:
        raise IncompatibleParent(f"parent {parent.version} shares no modality with this run")
    for modality in shared:
        old = parent.modalities[modality].keys
        new = np.asarray(keys[modality], dtype=object)
        if old.shape[0] > new.shape[0] or not np.array_equal(new[: old.shape[0]], np.asarray(old, dtype=object)):
            raise IncompatibleParent(
                f"parent {parent.version}: the entity ids of modality {modality!r} do not match the catalog's "
                "(was the catalog replaced?)"
            )


def _resumable_encoder(
    modality: str, old: ParentModality, problem: Problem, config: TrainingConfig
) -> dict[str, np.ndarray] | None:
    """The parent's free rows and encoder weights of an unchanged modality (same entities, free rows, an encoder
    of the same shape), else None."""
    if old.weights is None or BASE_ROWS not in old.weights or modality in config.projected:
        return None
    if config.encoder == "none" or old.embeddings.shape[0] != problem.sizes[modality]:
        return None
    encoder = encoder_for(problem, modality, config)
    expected = {f"{ENCODER_PREFIX}{k}": tuple(v.shape) for k, v in encoder.state_dict().items()}
    given = {k: tuple(v.shape) for k, v in old.weights.items() if k.startswith(ENCODER_PREFIX)}
    if given != expected or old.weights[BASE_ROWS].shape != old.embeddings.shape:
        return None
    return old.weights


def encoder_for(problem: Problem, modality: str, config: TrainingConfig) -> FactorEncoder:
    """An encoder of the shape `ModalityModel` builds for `modality` (its weights are not used)."""
    return FactorEncoder(
        rank=config.rank,
        conv_width=config.conv_width,
        lstm_width=config.lstm_width,
        order=config.cheb_order if problem.laplacians[modality] is not None else 0,
        steps=config.diffusion_steps,
        recurrent=config.encoder == "chebyshev-lstm",
    )


def _fit_new_parts(
    problem: Problem,
    states: dict[str, ModalityState],
    frozen_rows: dict[str, int],
    frozen_biases: dict[str, dict[str, int]],
    config: TrainingConfig,
) -> None:
    """Adam steps on the training objective over the rows and biases that are not frozen (the first
    `frozen_rows[m]` rows of modality m, the first `frozen_biases[m][r]` biases of m in relation r), in place."""
    free_rows = {m: frozen_rows.get(m, 0) < n for m, n in problem.sizes.items()}
    relations = [r for r in problem.relations if _touches_free_parts(r, frozen_rows, frozen_biases)]
    if not relations or config.warm_fit_steps == 0:
        return
    factors = {m: _Masked(s.factor, frozen_rows.get(m, 0)) for m, s in states.items()}
    biases = {
        m: {r: _Masked(b, frozen_biases.get(m, {}).get(r, 0)) for r, b in s.biases.items()} for m, s in states.items()
    }
    parameters = [p.free for p in factors.values() if p.trainable] + [
        p.free for per in biases.values() for p in per.values() if p.trainable
    ]
    laplacians = {m: to_torch_csr(problem.laplacians[m]) for m in problem.modalities
                  if free_rows[m] and problem.laplacians[m] is not None}
    smoothness = {m: (lambda A, L=L: config.graph_weight * dirichlet_energy(L, A)) for m, L in laplacians.items()}
    optimizer = adam([{"params": parameters, "lr": FIT_LEARNING_RATE}])
    generator = torch.Generator().manual_seed(start_seed(config.seed))
    for _ in range(config.warm_fit_steps):
        optimizer.zero_grad()
        loss = objective(
            relations,
            {m: p.value() for m, p in factors.items()},
            {m: {r: p.value() for r, p in per.items()} for m, per in biases.items()},
            config,
            generator,
            smoothness,
        )
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        for modality, state in states.items():
            state.factor = factors[modality].value().numpy().astype(np.float32)
            state.biases = {r: p.value().numpy().astype(np.float32) for r, p in biases[modality].items()}


def _touches_free_parts(
    relation: Relation, frozen_rows: dict[str, int], frozen_biases: dict[str, dict[str, int]]
) -> bool:
    """Whether a training entry of `relation` touches a row or bias that the warm fit trains: on some axis, an
    entity at or past the first frozen row or bias of its modality."""
    coords = relation.train.coords
    for axis, modality in enumerate(relation.meta.modalities):
        first_free = min(frozen_rows.get(modality, 0), frozen_biases.get(modality, {}).get(relation.meta.name, 0))
        if coords.shape[1] and bool((coords[axis] >= first_free).any()):
            return True
    return False


class _Masked:
    """An array whose first `frozen` rows are constants and whose other rows are a trainable parameter."""

    def __init__(self, start: np.ndarray, frozen: int) -> None:
        values = torch.as_tensor(np.asarray(start, dtype=np.float32))
        self.frozen = values[:frozen]
        self.free = torch.nn.Parameter(values[frozen:].clone())
        self.trainable = self.free.shape[0] > 0

    def value(self) -> torch.Tensor:
        return torch.cat([self.frozen, self.free]) if self.trainable else self.frozen


def resumable_weights(model: ModalityModel) -> dict[str, np.ndarray]:
    """What a later run needs to resume `model`: its free rows (`BASE_ROWS`, unless it is projected) and its
    encoder's weights (`ENCODER_PREFIX` keys), as float32 arrays."""
    return {
        name: value for name, value in module_arrays(model).items()
        if name == BASE_ROWS or name.startswith(ENCODER_PREFIX)
    }


def resume_encoder(model: ModalityModel, weights: dict[str, np.ndarray]) -> None:
    """Load encoder weights saved by `resumable_weights` into `model` (strict: every weight, same shapes)."""
    if model.encoder is None:
        raise ValueError("the model has no encoder to resume")
    state = {
        key[len(ENCODER_PREFIX):]: torch.as_tensor(value) for key, value in weights.items() if key.startswith(ENCODER_PREFIX)
    }
    model.encoder.load_state_dict(state, strict=True)
