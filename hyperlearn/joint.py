"""Joint training: the same model and global objective optimised in one process, all encoders at once.

The yardstick for the distributed trainer (paper claim 1: no accuracy lost by distributing). A round here is
`local_steps` steps on the whole objective, so rounds of both modes cost the same number of steps.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from hyperlearn.config import TrainingConfig
from hyperlearn.start import initial_states
from hyperlearn.model import adam, build_model, resolve_device
from hyperlearn.objective import objective
from hyperlearn.problem import Problem, Relation, load_problem, with_validation_in_training
from hyperlearn.result import TrainResult
from hyperlearn.rounds import Log, States, run_rounds
from hyperlearn.rundir import RunDir
from hyperlearn.seeds import negatives_seed
from hyperlearn.snapshots import (
    Snapshot,
    generator_array,
    load_generator_array,
    prefixed,
    under,
)
from hyperlearn.trainer import model_snapshot, restore_model
from hyperlearn.warm_start import WarmStart, anchors_for, resumable_weights, resume_encoder


class JointTrainers:
    """Every modality's model of `problem` (fitting its training entries) and one optimiser over all of them:
    the `TrainerSet` of joint training."""

    def __init__(self, problem: Problem, config: TrainingConfig, warm: WarmStart | None = None) -> None:
        """`warm`: start from a parent version (hyperlearn.warm_start) instead of `initial_states`, with its
        warm-started modalities anchored to the parent's embeddings."""
        self.config = config
        states = initial_states(problem, config) if warm is None else warm.states
        device = resolve_device(config.device)
        self.relations = tuple(Relation(meta=r.meta, splits={"train": r.train.to(device)}) for r in problem.relations)
        on_device = dataclasses.replace(problem, relations=self.relations)
        self.models = {
            m: build_model(m, states[m], problem.laplacians[m], on_device.relations_of(m), config, device)
            for m in problem.modalities
        }
        self.anchors = {} if warm is None else anchors_for(warm.anchors, self.relations, config, device)
        for modality, weights in (warm.encoders if warm is not None else {}).items():
            resume_encoder(self.models[modality], weights)
        groups = [group for model in self.models.values() for group in model.parameter_groups()]
        self.optimizer = adam(groups)
        self.generator = torch.Generator().manual_seed(negatives_seed(config.seed, "joint"))

    def start(self) -> States:
        return {m: model.state() for m, model in self.models.items()}

    def round(self, states: States) -> States:
        """`local_steps` steps on the whole objective (the models hold their own parameters: `states` is only
        the contract's input, equal to what they publish)."""
        own_terms = {m: model.regulariser for m, model in self.models.items()}
        biases = {m: model.biases for m, model in self.models.items()}
        for _ in range(self.config.local_steps):
            self.optimizer.zero_grad()
            factors = {m: model() for m, model in self.models.items()}
            objective(self.relations, factors, biases, self.config, self.generator, own_terms, anchors=self.anchors).backward()
            self.optimizer.step()
        return self.start()

    def snapshot(self) -> Snapshot:
        """Every model's parameters, the one optimiser's state and the negatives' generator, as arrays."""
        models: Snapshot = {}
        for modality, model in self.models.items():
            models.update(prefixed(modality, model_snapshot(model)))
        return {
            **prefixed("models", models),
            **prefixed("optimizer", self.optimizer.state_arrays()),
            "generator": generator_array(self.generator),
        }

    def restore(self, snapshot: Snapshot) -> None:
        models = under("models", snapshot)
        for modality, model in self.models.items():
            restore_model(model, under(modality, models))
        self.optimizer.load_state_arrays(under("optimizer", snapshot))
        load_generator_array(self.generator, snapshot["generator"])

    def weights(self) -> dict[str, dict[str, np.ndarray]]:
        return {m: resumable_weights(model) for m, model in self.models.items()}

    def close(self) -> None:
        self.models.clear()


def train_joint(
    run: RunDir, config: TrainingConfig, log: Log = print, warm: WarmStart | None = None, resume: bool = False
) -> TrainResult:
    """Train every modality's encoder together on the global objective, from `warm` when given; returns the
    best-on-validation state (or, with `config.refit`, the model trained again on training + validation
    entries). `resume`: carry on from the run's resume checkpoint (`run_rounds`)."""
    clock = time.perf_counter()
    problem = load_problem(run)
    timings = {"start_seconds": time.perf_counter() - clock}

    def make_trainers(fit_validation: bool) -> JointTrainers:
        return JointTrainers(with_validation_in_training(problem) if fit_validation else problem, config, warm)

    result = run_rounds(problem, make_trainers, config, "joint", log, checkpoints=run, resume=resume)
    result.timings = {**timings, **result.timings}
    return result
