"""Joint training: the same model and global objective optimised in one process, all encoders at once.

The yardstick for the distributed trainer (paper claim 1: no accuracy lost by distributing). A round here is
`local_steps` steps on the whole objective, so rounds of both modes cost the same number of steps.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import torch

from hyperlearn.config import TrainingConfig
from hyperlearn.start import initial_states
from hyperlearn.losses import cross_modal_loss
from hyperlearn.model import build_model, modality_seed, resolve_device
from hyperlearn.problem import Problem, Relation, load_problem, with_validation_in_training
from hyperlearn.result import TrainResult
from hyperlearn.rounds import Advance, States, run_rounds
from hyperlearn.rundir import RunDir


def train_joint(run: RunDir, config: TrainingConfig, log: Callable[[str], None] = print) -> TrainResult:
    """Train every modality's encoder together on the global objective; returns the best-on-validation state
    (or, with `config.refit`, the model trained again on training + validation entries)."""
    clock = time.perf_counter()
    problem = load_problem(run)
    states, advance = joint_training(problem, config)
    timings = {"start_seconds": time.perf_counter() - clock}
    refit = (lambda: joint_training(with_validation_in_training(problem), config)) if config.refit else None
    result = run_rounds(
        problem, states, advance, config, "joint", log, checkpoints=run, refit=refit
    )
    result.timings = timings
    return result


def joint_training(problem: Problem, config: TrainingConfig) -> tuple[States, Advance]:
    """Fresh models for every modality of `problem` (fitting its training entries) and the optimiser over all
    of them: the round-0 states and the function that runs one round."""
    states = initial_states(problem, config)
    device = resolve_device(config.device)
    on_device = dataclasses.replace(
        problem, relations=tuple(Relation(meta=r.meta, splits={"train": r.train.to(device)}) for r in problem.relations)
    )
    models = {
        m: build_model(m, states[m], problem.laplacians[m], on_device.relations_of(m), config, device)
        for m in problem.modalities
    }
    optimizer = torch.optim.Adam([group for model in models.values() for group in model.parameter_groups()])
    generator = torch.Generator().manual_seed(modality_seed(config.seed + 1, "joint"))

    def advance(_: States) -> States:
        for _ in range(config.local_steps):
            optimizer.zero_grad(set_to_none=True)
            factors = {m: model() for m, model in models.items()}
            loss = cross_modal_loss(
                on_device.relations,
                factors,
                {m: model.biases for m, model in models.items()},
                config.l2,
                generator,
                config.projected,
            )
            for m, model in models.items():
                loss = loss + model.regulariser(factors[m])
            loss.backward()
            optimizer.step()
        return {m: model.state() for m, model in models.items()}

    return {m: model.state() for m, model in models.items()}, advance
