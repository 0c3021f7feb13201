"""One worker's job: minimise its modality's loss with every other factor frozen (docs/method.md §3).

Loss_θ = Σ_{relations ∋ θ} (cross-modal term) + γ · Dirichlet energy of A_θ (+ projection weight decay), plus
a proximal term towards the state it published last round, which damps the parallel (Jacobi) rounds. The
trainer holds the modality's graph, encoder, optimiser and the observed entries of the relations spanning it;
it receives the other modalities' published states and returns only its own. It runs as a long-lived Dask
actor on its own worker.
"""

from __future__ import annotations

import torch

from hyperlearn.config import TrainingConfig
from hyperlearn.losses import proximal_term
from hyperlearn.model import build_model, resolve_device
from hyperlearn.objective import objective
from hyperlearn.problem import Relation, share_problem, with_validation_in_training
from hyperlearn.rundir import ModalityState, TrainerShare
from hyperlearn.seeds import negatives_seed


class ModalityTrainer:
    """Owns modality `modality`: its encoder and optimiser never leave this object."""

    def __init__(
        self,
        share: TrainerShare,
        config: TrainingConfig,
        initial: ModalityState,
        threads: int = 0,
        fit_validation: bool = False,
    ) -> None:
        """`share`: the modality's relations and graph as arrays (`RunDir.read_trainer_share`), sent by the
        driver. `fit_validation`: fit training + validation entries (a refit) instead of the training entries;
        the share then holds both splits."""
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
        self.optimizer = torch.optim.Adam(self.model.parameter_groups())
        self.generator = torch.Generator().manual_seed(negatives_seed(config.seed, modality))

    def update(self, states: dict[str, ModalityState]) -> ModalityState:
        """`local_steps` optimiser steps against the others' states from the last round; returns the new
        state of this modality."""
        factors = {m: torch.as_tensor(s.factor, device=self.device) for m, s in states.items() if m != self.modality}
        biases = {
            m: {r: torch.as_tensor(b, device=self.device) for r, b in s.biases.items()}
            for m, s in states.items()
            if m != self.modality
        }
        previous = states[self.modality]
        previous_factor = torch.as_tensor(previous.factor, device=self.device)
        previous_biases = {r: torch.as_tensor(b, device=self.device) for r, b in previous.biases.items()}
        for _ in range(self.config.local_steps):
            self.optimizer.zero_grad(set_to_none=True)
            own = self.model()
            loss = objective(
                self.relations,
                {**factors, self.modality: own},
                {**biases, self.modality: self.model.biases},
                self.config,
                self.generator,
                {self.modality: self.model.regulariser},
            )
            loss = loss + self.config.proximal * proximal_term(
                self.relations, self.modality, own, previous_factor, self.model.biases, previous_biases
            )
            loss.backward()
            self.optimizer.step()
        return self.model.state()

    def state(self) -> ModalityState:
        """What the model outputs now: round 0's published state (the start, or the untrained projection)."""
        return self.model.state()
