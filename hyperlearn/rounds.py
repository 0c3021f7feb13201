"""The round loop shared by distributed and joint training: evaluate, log, early-stop, checkpoint, refit.

Training is driven through a `TrainerSet`: the models of every modality, with `start` (the round-0 states),
`round` (every modality's local steps from the given states, then the exchange) and `close`. Joint training
(`hyperlearn.joint.JointTrainers`) and one Dask actor per modality (`hyperlearn.coordinator.DaskTrainers`) are
its two implementations, so the loop here knows nothing of processes or devices.

The best round is the one with the best early-stopping criterion (`metrics.early_stopping_criterion`): the
primary relation's validation NDCG@10 when it has an evaluation target, else the lowest validation loss — the
cross-modal terms of the objective, each relation weighted as in training, on the validation entries — so
several relations are traded off as the spec's weights say. Published states that collapsed to zero stop the
run (hyperlearn.collapse). With a refit, a fresh trainer set fitting training + validation entries is trained for
that many rounds, so the published model has seen every training entry while its round count was still chosen
on held-out data. Test data is read only once, for the final state, after training has stopped.

Every `checkpoint_every` rounds, and at every best round, the loop writes the run's resume checkpoint
(`RunDir.save_resume_checkpoint`): the states, the trainer set's `snapshot()` (encoders, optimisers, random
generators), the history and the early-stopping state. `run_rounds(…, resume=True)` carries on from it and ends
where an uninterrupted run with the same seed ends, to the bit on CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from hyperlearn.chebconv import to_torch_csr
from hyperlearn.checkpointing import CheckpointWriter
from hyperlearn.config import TrainingConfig
from hyperlearn.losses import cross_modal_loss
from hyperlearn.collapse import check_not_collapsed
from hyperlearn.metrics import early_stopping_criterion, evaluate, headline_names
from hyperlearn.objective import OwnTerms, dirichlet_energy, objective
from hyperlearn.problem import Problem, Relation, with_validation_in_training
from hyperlearn.result import TrainResult
from hyperlearn.rundir import Checkpoint, ModalityState, Phase, RunDir
from hyperlearn.seeds import evaluation_seed
from hyperlearn.snapshots import Snapshot

States = dict[str, ModalityState]
Weights = dict[str, dict[str, np.ndarray]]  # modality → its resumable weights (hyperlearn.warm_start)
Log = Callable[[str], None]

#: The keys of a result's metrics and history rows that are wall-clock times: they differ between two runs that
#: are otherwise identical. `fit_seconds` is the rounds' own time (validation, checkpoints and the search's
#: trainer start left out; the refit counted whole), the measure peers' training times compare with.
TIMING_KEYS = ("seconds", "round_seconds", "train_seconds", "refit_seconds", "fit_seconds", "seconds_per_round")


class TrainerSet(Protocol):
    """The models of every modality of a problem, trained round by round."""

    def start(self) -> States:
        """The round-0 states: each model's own output before training."""

    def round(self, states: States) -> States:
        """Every modality's local steps against `states` (the last round's), then the new states."""

    def snapshot(self) -> Snapshot:
        """Everything training changes besides the states (encoders, optimisers, random generators), as arrays."""

    def restore(self, snapshot: Snapshot) -> None:
        """Carry on from a `snapshot()` of a trainer set built with the same problem and settings."""

    def weights(self) -> Weights:
        """Every model's resumable weights now (hyperlearn.warm_start.resumable_weights), for a later warm start."""

    def close(self) -> None:
        """Release the models (and, for actors, their workers' memory)."""


class ResumeMismatch(RuntimeError):
    """A resume checkpoint written by a run with other settings or another mode."""


@dataclass
class Search:
    """The early-stopped search so far: its history, the best round with its criterion, states and resumable
    weights, and the round-0 states (what the collapse check compares against)."""

    history: list[dict[str, float]]
    best_score: float
    best_round: int
    best_states: States
    first_states: States
    best_weights: Weights

    @property
    def last_round(self) -> int:
        return len(self.history) - 1


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
    resume: bool = False,
) -> TrainResult:
    """Run up to `config.rounds` rounds, stop after `config.patience` rounds without validation gain; then,
    with `config.refit`, train a fresh trainer set on training + validation entries for the best round's number
    of rounds and return that instead of the best state (validation metrics stay those of the best round).
    With `resume`, carry on from the resume checkpoint in `checkpoints` when there is one (ResumeMismatch when it
    belongs to other settings or another mode); the result's `resumed_from` says from which phase and round."""
    saved = _resumable(checkpoints, config, mode) if resume else None
    if saved is None and checkpoints is not None:
        checkpoints.resume_checkpoint.unlink(missing_ok=True)  # another run's, or one not to resume
    start = time.perf_counter() - (saved.progress["seconds"] if saved else 0.0)
    trainer_start_seconds = 0.0
    with CheckpointWriter(checkpoints) as writer:
        if saved is not None and saved.phase == "refit":
            search = _saved_search(saved)
        else:
            clock = time.perf_counter()
            trainers = make_trainers(False)
            trainer_start_seconds = time.perf_counter() - clock
            try:
                search = _search(problem, trainers, config, mode, log, writer, start, saved)
            finally:
                trainers.close()
        search_seconds = time.perf_counter() - start
        best_round, best_states, best_weights = search.best_round, search.best_states, search.best_weights
        fitted = problem
        if config.refit and best_round > 0:
            fitted = with_validation_in_training(problem)  # what the refit models fit: their offsets come from it
            refit_from = saved if saved is not None and saved.phase == "refit" else None
            best_states, best_weights = _refit(make_trainers(True), search, config, mode, log, writer, refit_from)
            writer.best(best_states, best_round)
    check_not_collapsed(best_states, search.first_states, when=f"after training (round {best_round})")
    train_seconds = time.perf_counter() - start
    refit_seconds = train_seconds - search_seconds
    history = search.history
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
            "refit_seconds": refit_seconds,
            "fit_seconds": sum(row.get("round_seconds", 0.0) for row in history) + refit_seconds,
            "seconds_per_round": search_seconds / max(rounds_run, 1),
        }
    )
    log(f"[{mode}] best round {best_round}: {_describe({k: v for k, v in test.items() if k.startswith('test/')})}")
    return TrainResult(
        states=best_states, history=history, metrics={**summary, **test}, mode=mode,
        timings={"trainer_start_seconds": trainer_start_seconds}, weights=best_weights,
        resumed_from=None if saved is None else {"phase": saved.phase, "round": saved.round},
    )


def _resumable(checkpoints: RunDir | None, config: TrainingConfig, mode: str) -> Checkpoint | None:
    """The run's resume checkpoint, when it has one; refused when another configuration or mode wrote it."""
    saved = None if checkpoints is None else checkpoints.load_resume_checkpoint()
    if saved is None:
        return None
    written = (saved.progress["config_hash"], saved.progress["mode"])
    if written != (config.config_hash(), mode):
        raise ResumeMismatch(
            f"{checkpoints.resume_checkpoint} was written by a {written[1]} run with settings {written[0]}, not "
            f"this {mode} run's {config.config_hash()}; remove it (or the staging folder) to start fresh"
        )
    return saved


def _save(
    writer: CheckpointWriter,
    phase: Phase,
    round_number: int,
    states: States,
    trainers: TrainerSet,
    search: Search,
    config: TrainingConfig,
    mode: str,
    seconds: float,
) -> None:
    if writer.run is None:
        return
    progress = {
        "history": list(search.history), "best_score": search.best_score, "best_round": search.best_round,
        "config_hash": config.config_hash(), "mode": mode, "seconds": seconds,
    }
    writer.resume(
        Checkpoint(
            phase=phase, round=round_number, states=states, trainers=trainers.snapshot(),
            best_states=search.best_states, first_states=search.first_states, best_weights=search.best_weights,
            progress=progress,
        )
    )


def _search(
    problem: Problem,
    trainers: TrainerSet,
    config: TrainingConfig,
    mode: str,
    log: Log,
    writer: CheckpointWriter,
    start: float,
    saved: Checkpoint | None,
) -> Search:
    """The early-stopped rounds, from round 0 or from where `saved` left them."""
    smoothness = graph_terms(problem, config)  # the Laplacians go to torch once per run, not once per round
    if saved is None:
        states = trainers.start()
        check_not_collapsed(states, when="at the start")
        metrics = validation_metrics(problem, states, config)
        train_loss = training_objective(problem, states, config, smoothness)
        history = [{"round": 0, "seconds": 0.0, "train_loss": train_loss, **metrics}]
        score = early_stopping_criterion(problem, metrics).value
        search = Search(history, score, 0, states, states, trainers.weights())
        log(f"[{mode}] round 0: {_describe(metrics)}")
    else:
        search = _saved_search(saved)
        trainers.restore(saved.trainers)
        states = saved.states
        log(f"[{mode}] resuming after round {saved.round} (best round so far {search.best_round})")
    while search.last_round < config.rounds and search.last_round - search.best_round < config.patience:
        round_number = search.last_round + 1
        clock = time.perf_counter()
        states = trainers.round(states)
        round_seconds = time.perf_counter() - clock
        train_loss = training_objective(problem, states, config, smoothness)
        metrics = validation_metrics(problem, states, config)
        seconds = time.perf_counter() - start
        search.history.append(
            {"round": round_number, "seconds": seconds, "round_seconds": round_seconds, "train_loss": train_loss,
             **metrics}
        )
        criterion = early_stopping_criterion(problem, metrics)
        improved = criterion.improves_on(search.best_score)
        if improved:
            search.best_score, search.best_round, search.best_states = criterion.value, round_number, states
            search.best_weights = trainers.weights()
            writer.best(states, round_number)
        if improved or round_number % config.checkpoint_every == 0:
            _save(writer, "search", round_number, states, trainers, search, config, mode, seconds)
        log(
            f"[{mode}] round {round_number}/{config.rounds}: loss {train_loss:.4f} {_describe(metrics)}"
            f" ({seconds:.1f}s){' *' if improved else ''}"
        )
        if round_number - search.best_round >= config.patience:
            log(f"[{mode}] no validation gain for {config.patience} rounds: stopping, best round {search.best_round}")
    return search


def _saved_search(saved: Checkpoint) -> Search:
    progress = saved.progress
    return Search(progress["history"], progress["best_score"], progress["best_round"], saved.best_states,
                  saved.first_states, saved.best_weights)


def _refit(
    trainers: TrainerSet,
    search: Search,
    config: TrainingConfig,
    mode: str,
    log: Log,
    writer: CheckpointWriter,
    saved: Checkpoint | None,
) -> tuple[States, Weights]:
    """`search.best_round` rounds of the refit trainers, from their start or from where `saved` left them; the
    final states and the trainers' resumable weights."""
    clock = time.perf_counter()
    rounds = search.best_round
    try:
        if saved is None:
            first, states = 1, trainers.start()
        else:
            trainers.restore(saved.trainers)
            first, states = saved.round + 1, saved.states
            log(f"[{mode}] resuming the refit after round {saved.round}")
        for round_number in range(first, rounds + 1):
            states = trainers.round(states)
            if round_number % config.checkpoint_every == 0 or round_number == rounds:
                seconds = search.history[-1]["seconds"] + time.perf_counter() - clock
                _save(writer, "refit", round_number, states, trainers, search, config, mode, seconds)
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
