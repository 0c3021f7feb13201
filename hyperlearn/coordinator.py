"""Distributed training (method.md §3): one long-lived trainer actor per modality, pinned to its own Dask
worker; each round every trainer updates in parallel from the previous round's states (Jacobi block
coordinate descent), then the states — factors and biases, never graphs, encoders or optimisers — are
exchanged through Dask."""

from __future__ import annotations

import time
from collections.abc import Callable

from distributed import Client, Future

from hyperlearn.config import TrainingConfig
from hyperlearn.start import initial_states
from hyperlearn.problem import load_problem, with_validation_in_training
from hyperlearn.result import TrainResult
from hyperlearn.rounds import Advance, States, run_rounds
from hyperlearn.rundir import RunDir
from hyperlearn.trainer import ModalityTrainer


def place_modalities(modalities: list[str], workers: list[str]) -> dict[str, str]:
    """Modality i goes to worker i (round-robin when there are fewer workers than modalities)."""
    if not workers:
        raise RuntimeError("the Dask cluster has no workers")
    ordered = sorted(workers)
    return {name: ordered[i % len(ordered)] for i, name in enumerate(modalities)}


def train_distributed(
    client: Client,
    run: RunDir,
    config: TrainingConfig,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train with one trainer actor per modality on `client`'s workers; returns the best-on-validation state
    (or, with `config.refit`, the model trained again on training + validation entries by fresh trainers)."""
    clock = time.perf_counter()
    problem = load_problem(run)
    timings = {"start_seconds": time.perf_counter() - clock}
    workers = client.scheduler_info()["workers"]
    placement = place_modalities(problem.modalities, list(workers))
    for modality, address in placement.items():
        log(f"[distributed] trainer for {modality!r} ({problem.sizes[modality]} entities) on {address}")
    started: list[Future] = []

    def start(fit_validation: bool) -> tuple[States, Advance]:
        client.cancel(started)  # a refit's trainers replace the search's: free their workers' memory first
        started.clear()
        fitted = with_validation_in_training(problem) if fit_validation else problem
        states = initial_states(fitted, config)
        per_worker = {address: list(placement.values()).count(address) for address in set(placement.values())}
        creations = {
            modality: client.submit(
                ModalityTrainer,
                run,
                modality,
                config,
                states[modality],
                max(1, workers[address]["nthreads"] // per_worker[address]),
                fit_validation,
                actor=True,
                workers=[address],
                allow_other_workers=False,
                pure=False,
            )
            for modality, address in placement.items()
        }
        started.extend(creations.values())
        actors = {modality: future.result() for modality, future in creations.items()}
        starts = {modality: actor.state() for modality, actor in actors.items()}

        def advance(current: States) -> States:
            pending = {modality: actor.update(current) for modality, actor in actors.items()}
            return {modality: call.result() for modality, call in pending.items()}

        return {modality: call.result() for modality, call in starts.items()}, advance

    try:
        states, advance = start(fit_validation=False)
        timings["trainer_start_seconds"] = time.perf_counter() - clock - timings["start_seconds"]
        result = run_rounds(
            problem, states, advance, config, "distributed", log, checkpoints=run,
            refit=(lambda: start(fit_validation=True)) if config.refit else None,
        )
    finally:
        client.cancel(started)  # releases the actors and their memory on the workers
    result.timings = timings
    return result
