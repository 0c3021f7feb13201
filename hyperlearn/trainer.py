"""One worker's job: minimise its modality's loss with every other factor frozen (docs/method.md §3).

Loss_θ = Σ_{relations ∋ θ} (cross-modal term) + γ · Dirichlet energy of A_θ (+ projection weight decay), plus
a proximal term towards the state it published last round, which damps the parallel (Jacobi) rounds. The
trainer holds the modality's graph, encoder, optimiser and the observed entries of the relations spanning it;
it receives the other modalities' published states and returns only its own. It runs as a long-lived Dask
actor on its own worker; `snapshot` / `restore` export and import everything it holds that training changes, so
a checkpoint can rebuild it (on a restarted worker, or in a resumed run) exactly as it was.
"""

from __future__ import annotations

import numpy as np
import torch

from hyperlearn.config import TrainingConfig
from hyperlearn.frozen import FrozenRelation, freeze
from hyperlearn.losses import proximal_term
from hyperlearn.model import ModalityModel, adam, build_model, resolve_device
from hyperlearn.objective import objective
from hyperlearn.problem import Relation, share_problem, with_validation_in_training
from hyperlearn.rundir import ModalityState, TrainerShare
from hyperlearn.seeds import negatives_seed
from hyperlearn.snapshots import (
    Snapshot,
    generator_array,
    load_generator_array,
    load_module_arrays,
    module_arrays,
    prefixed,
    under,
)
from hyperlearn.warm_start import anchors_for, resumable_weights, resume_encoder


class ModalityTrainer:
    """Owns modality `modality`: its encoder and optimiser never leave this object."""

    def __init__(
        self,
        share: TrainerShare,
        config: TrainingConfig,
        initial: ModalityState,
        threads: int = 0,
        fit_validation: bool = False,
        snapshot: Snapshot | None = None,
        encoder: dict[str, np.ndarray] | None = None,
        anchor: np.ndarray | None = None,
    ) -> None:
        """`share`: the modality's relations and graph as arrays (`RunDir.read_trainer_share`), sent by the
        driver. `fit_validation`: fit training + validation entries (a refit) instead of the training entries;
        the share then holds both splits. `snapshot`: carry on from a trainer's `snapshot()` instead of from
        `initial`; `encoder`: encoder weights to resume (a warm start, hyperlearn.warm_start) instead of a fresh
        encoder; `anchor`: the parent's embeddings of this modality, which a warm start pulls it towards."""
        if threads > 0:
            torch.set_num_threads(threads)
        self.modality = modality = share.modality
        self.config = config
        self.device = resolve_device(config.device)
        problem = share_problem(share)
        if fit_validation:
            problem = with_validation_in_training(problem)
        self.relations = tuple(
            Relation(meta=r.meta, splits={s: o.to(self.device) for s, o in r.splits.items()})
            for r in problem.relations_of(modality)
        )
        self.model = build_model(modality, initial, problem.laplacians[modality], self.relations, config, self.device)
        if encoder is not None:
            resume_encoder(self.model, encoder)
        self.anchors = {} if anchor is None else anchors_for({modality: anchor}, self.relations, config, self.device)
        self.optimizer = adam(self.model.parameter_groups())
        self.generator = torch.Generator().manual_seed(negatives_seed(config.seed, modality))
        if snapshot is not None:
            self.restore(snapshot)

    def update(self, states: dict[str, ModalityState]) -> ModalityState:
        """`local_steps` optimiser steps against the others' states from the last round; returns the new
        state of this modality. Its own last state is read (and must be in `states`) only for a proximal term."""
        factors = {m: torch.as_tensor(s.factor, device=self.device) for m, s in states.items() if m != self.modality}
        biases = {
            m: {r: torch.as_tensor(b, device=self.device) for r, b in s.biases.items()}
            for m, s in states.items()
            if m != self.modality
        }
        if self.config.proximal > 0:
            previous = states[self.modality]
            previous_factor = torch.as_tensor(previous.factor, device=self.device)
            previous_biases = {r: torch.as_tensor(b, device=self.device) for r, b in previous.biases.items()}
        frozen = self._frozen(factors, biases)
        for _ in range(self.config.local_steps):
            self.optimizer.zero_grad()
            own = self.model()
            loss = objective(
                self.relations,
                {**factors, self.modality: own},
                {**biases, self.modality: self.model.biases},
                self.config,
                self.generator,
                {self.modality: self.model.regulariser},
                frozen=frozen,
                anchors=self.anchors,
            )
            if self.config.proximal > 0:
                loss = loss + self.config.proximal * proximal_term(
                    self.relations, self.modality, own, previous_factor, self.model.biases, previous_biases
                )
            loss.backward()
            self.optimizer.step()
        return self.model.state()

    def _frozen(
        self, factors: dict[str, torch.Tensor], biases: dict[str, dict[str, torch.Tensor]]
    ) -> dict[str, FrozenRelation]:
        """This round's constant part of each relation's loss (hyperlearn.frozen), formed once from the others'
        states and reused by every local step; the own axes are read from the model at each step instead."""
        parts = {}
        for relation in self.relations:
            names = relation.meta.modalities
            part = freeze(
                relation,
                self.modality,
                [factors.get(m) for m in names],
                [biases[m][relation.meta.name] if m in biases else None for m in names],
                [m not in self.config.projected for m in names],
            )
            if part is not None:
                parts[relation.meta.name] = part
        return parts

    def weights(self) -> dict[str, np.ndarray]:
        """The model's resumable weights now (free rows, encoder), for the version a later run warm-starts from."""
        return resumable_weights(self.model)

    def state(self) -> ModalityState:
        """What the model outputs now: round 0's published state (the start, or the untrained projection)."""
        return self.model.state()

    def snapshot(self) -> Snapshot:
        """The model's parameters, the optimiser's state and the negatives' generator, as arrays."""
        return {
            **prefixed("model", model_snapshot(self.model)),
            **prefixed("optimizer", self.optimizer.state_arrays()),
            "generator": generator_array(self.generator),
        }

    def restore(self, snapshot: Snapshot) -> None:
        """Carry on from `snapshot` (this trainer's own, or that of one it replaces)."""
        restore_model(self.model, under("model", snapshot))
        self.optimizer.load_state_arrays(under("optimizer", snapshot))
        load_generator_array(self.generator, snapshot["generator"])


def model_snapshot(model: ModalityModel) -> Snapshot:
    """A modality model's parameters, plus its projection's dropout generator when it has one."""
    arrays = prefixed("parameters", module_arrays(model))
    generator = getattr(model.base, "generator", None)
    if generator is not None:
        arrays["dropout_generator"] = generator_array(generator)
    return arrays


def restore_model(model: ModalityModel, snapshot: Snapshot) -> None:
    """Put `model_snapshot` output back into a model built with the same settings."""
    load_module_arrays(model, under("parameters", snapshot))
    if "dropout_generator" in snapshot:
        load_generator_array(model.base.generator, snapshot["dropout_generator"])
