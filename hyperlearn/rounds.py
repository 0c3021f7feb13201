"""The round loop shared by distributed and joint training: evaluate, log, early-stop, checkpoint, refit.

Training is driven through a `TrainerSet`: the models of every modality, with `start` (the round-0 states),
`round` (every modality's local steps from the given states, then the exchange), `weights` (what a later warm
start resumes: kept with the best round's states) and `close`. Joint training
(`hyperlearn.joint.JointTrainers`) and one Dask actor per modality (`hyperlearn.coordinator.DaskTrainers`) are
its two implementations, so the loop here knows nothing of processes or devices.

The best round is the one with the best early-stopping criterion (`metrics.early_stopping_criterion`): the
primary relation's validation NDCG@10 when it has an evaluation target, else the lowest validation loss — the
cross-modal terms of the objective, each relation weighted as in training, on the validation entries — so
several relations are traded off as the spec's weights say. Published states that collapsed to zero stop the
run (hyperlearn.collapse). With a refit, a fresh trainer set fitting training + validation entries is trained for
that many rounds, so the published model has seen every training entry while its round count was still chosen
on held-out data. Test data is read only once, for the final state, after training has stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

from hyperlearn.chebconv import to_torch_csr
from hyperlearn.config import TrainingConfig
from hyperlearn.losses import cross_modal_loss
from hyperlearn.collapse import check_not_collapsed
from hyperlearn.metrics import early_stopping_criterion, evaluate, headline_names
from hyperlearn.objective import OwnTerms, dirichlet_energy, objective
from hyperlearn.problem import Problem, Relation, with_validation_in_training
from hyperlearn.result import TrainResult
from hyperlearn.rundir import ModalityState, RunDir
from hyperlearn.seeds import evaluation_seed

States = dict[str, ModalityState]
Log = Callable[[str], None]


class TrainerSet(Protocol):
    """The models of every modality of a problem, trained round by round."""

    def start(self) -> States:
        """The round-0 states: each model's own output before training."""

    def round(self, states: States) -> States:
        """Every modality's local steps against `states` (the last round's), then the new states."""

    def weights(self) -> dict[str, dict[str, np.ndarray]]:
        """Every model's resumable weights now (hyperlearn.warm_start.resumable_weights), for a later warm start."""

    def close(self) -> None:
        """Release the models (and, for actors, their workers' memory)."""


#: A fresh trainer set for the problem, fitting its training entries, or with `fit_validation` its training and
#: validation entries (a refit).
MakeTrainers = Callable[[bool], TrainerSet]


def _tensors(states: States) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    factors = {m: torch.as_tensor(s.factor) for m, s in states.items()}
    biases = {m: {r: torch.as_tensor(b) for r, b in s.biases.items()} for m, s in states.items()}
    return factors, biases


def graph_terms(problem: Problem, config: TrainingConfig) -> dict[str, OwnTerms]:
    """Each modality's Dirichlet term γ · ½tr(AᵀLA)/n as a function of its embeddings (modalities with a graph)."""
    laplacians = {m: to_torch_csr(L) for m, L in problem.laplacians.items() if L is not None}
    return {m: (lambda A, L=L: config.graph_weight * dirichlet_energy(L, A)) for m, L in laplacians.items()}


def training_objective(
    problem: Problem, states: States, config: TrainingConfig, smoothness: dict[str, OwnTerms]
) -> float:
    """The global objective (docs/method.md §2) at the published states: cross-modal terms of every relation plus
    the Dirichlet energy of every modality (`smoothness`, from `graph_terms`). The same number for joint and
    distributed runs. A projection's weight decay is not in it: the projection weights stay with their model and
    are not published."""
    factors, biases = _tensors(states)
    generator = torch.Generator().manual_seed(evaluation_seed(config.seed))
    with torch.no_grad():
        return float(objective(problem.relations, factors, biases, config, generator, smoothness))


def validation_loss(problem: Problem, states: States, config: TrainingConfig) -> float:
    """Σ_relations w · (the value model's fit term, against seeded sampled negatives for observed tuples) on
    validation."""
    held_out = [Relation(meta=r.meta, splits={"train": r.splits["validation"]}) for r in problem.relations]
    factors, biases = _tensors(states)
    generator = torch.Generator().manual_seed(evaluation_seed(config.seed))
    with torch.no_grad():
        return float(cross_modal_loss(held_out, factors, biases, 0.0, generator))


def validation_metrics(problem: Problem, states: States, config: TrainingConfig) -> dict[str, float]:
    """The early-stopping loss and every relation's validation metrics."""
    metrics = {"validation_loss": validation_loss(problem, states, config)}
    for relation in problem.relations:
        metrics.update(evaluate(relation, states, "validation", evaluation_seed(config.seed)))
    return metrics


def run_rounds(
    problem: Problem,
    make_trainers: MakeTrainers,
    config: TrainingConfig,
    mode: str,
    log: Log = print,
    checkpoints: RunDir | None = None,
) -> TrainResult:
    """Run up to `config.rounds` rounds, stop after `config.patience` rounds without validation gain; then,
    with `config.refit`, train a fresh trainer set on training + validation entries for the best round's number
    of rounds and return that instead of the best state (validation metrics stay those of the best round)."""
    start = time.perf_counter()
    trainers = make_trainers(False)
    trainer_start_seconds = time.perf_counter() - start
    try:
        history, best_round, best_states, best_weights, first_states = _search(
            problem, trainers, config, mode, log, checkpoints, start
        )
    finally:
        trainers.close()
    search_seconds = time.perf_counter() - start
    fitted = problem
    if config.refit and best_round > 0:
        fitted = with_validation_in_training(problem)  # what the refit models fit: their offsets come from it
        best_states, best_weights = _refit(make_trainers(True), best_round, mode, log)
        if checkpoints is not None:
            checkpoints.save_checkpoint(best_states, best_round)
    check_not_collapsed(best_states, first_states, when=f"after training (round {best_round})")
    train_seconds = time.perf_counter() - start
    test = {key: value for key, value in history[best_round].items() if key.startswith("validation/")}
    for relation in fitted.relations:
        test.update(evaluate(relation, best_states, "test", evaluation_seed(config.seed)))
    summary = _headline(problem.primary_relation(), test)
    rounds_run = len(history) - 1
    summary.update(
        {
            "best_round": float(best_round),
            "rounds_run": float(rounds_run),
            "refit_rounds": float(best_round if config.refit else 0),
            "train_seconds": train_seconds,
            "refit_seconds": train_seconds - search_seconds,
            "seconds_per_round": search_seconds / max(rounds_run, 1),
        }
    )
    log(f"[{mode}] best round {best_round}: {_describe({k: v for k, v in test.items() if k.startswith('test/')})}")
    return TrainResult(
        states=best_states, history=history, metrics={**summary, **test}, mode=mode,
        timings={"trainer_start_seconds": trainer_start_seconds}, weights=best_weights,
    )


def _search(
    problem: Problem,
    trainers: TrainerSet,
    config: TrainingConfig,
    mode: str,
    log: Log,
    checkpoints: RunDir | None,
    start: float,
) -> tuple[list[dict[str, float]], int, States, dict[str, dict[str, np.ndarray]], States]:
    """The early-stopped rounds: their history, the best round, its states and resumable weights, and the
    round-0 states."""
    states = trainers.start()
    check_not_collapsed(states, when="at the start")
    first_states = states
    metrics = validation_metrics(problem, states, config)
    smoothness = graph_terms(problem, config)  # the Laplacians go to torch once per run, not once per round
    train_loss = training_objective(problem, states, config, smoothness)
    history = [{"round": 0, "seconds": 0.0, "train_loss": train_loss, **metrics}]
    best_score, best_round, best_states = early_stopping_criterion(problem, metrics).value, 0, states
    best_weights = trainers.weights()
    log(f"[{mode}] round 0: {_describe(metrics)}")
    for round_number in range(1, config.rounds + 1):
        states = trainers.round(states)
        train_loss = training_objective(problem, states, config, smoothness)
        metrics = validation_metrics(problem, states, config)
        seconds = time.perf_counter() - start
        history.append({"round": round_number, "seconds": seconds, "train_loss": train_loss, **metrics})
        criterion = early_stopping_criterion(problem, metrics)
        improved = criterion.improves_on(best_score)
        if improved:
            best_score, best_round, best_states = criterion.value, round_number, states
            best_weights = trainers.weights()
            if checkpoints is not None:
                checkpoints.save_checkpoint(states, round_number)
        log(
            f"[{mode}] round {round_number}/{config.rounds}: loss {train_loss:.4f} {_describe(metrics)}"
            f" ({seconds:.1f}s){' *' if improved else ''}"
        )
        if round_number - best_round >= config.patience:
            log(f"[{mode}] no validation gain for {config.patience} rounds: stopping, best round {best_round}")
            break
    return history, best_round, best_states, best_weights, first_states


def _refit(trainers: TrainerSet, rounds: int, mode: str, log: Log) -> tuple[States, dict[str, dict[str, np.ndarray]]]:
    clock = time.perf_counter()
    try:
        states = trainers.start()
        for round_number in range(1, rounds + 1):
            states = trainers.round(states)
            log(f"[{mode}] refit on training + validation entries, round {round_number}/{rounds} "
                f"({time.perf_counter() - clock:.1f}s)")
        weights = trainers.weights()
    finally:
        trainers.close()
    return states, weights


def _headline(relation: Relation, metrics: dict[str, float]) -> dict[str, float]:
    """The primary relation's headline test metrics (test_rmse, test_mae, or test_ndcg@10 …) under short keys."""
    keys = {name: f"test/{relation.meta.name}/{name}" for name in headline_names(relation)}
    return {f"test_{name}": metrics[key] for name, key in keys.items() if key in metrics}


def _describe(metrics: dict[str, float]) -> str:
    return " ".join(f"{key}={value:.4f}" for key, value in metrics.items())
