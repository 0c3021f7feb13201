"""Distributed training (method.md §3): one long-lived trainer actor per modality, pinned to its own Dask
worker; each round every trainer updates in parallel from the previous round's states (Jacobi block
coordinate descent), then the states — factors and biases, never graphs, encoders or optimisers — are
exchanged through Dask."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from distributed import Client

from hyperlearn.config import TrainingConfig
from hyperlearn.init import initial_states
from hyperlearn.problem import load_problem
from hyperlearn.result import TrainResult
from hyperlearn.rounds import States, run_rounds
from hyperlearn.trainer import ModalityTrainer


def place_modalities(modalities: list[str], workers: list[str]) -> dict[str, str]:
    """Modality i goes to worker i (round-robin when there are fewer workers than modalities)."""
    if not workers:
        raise RuntimeError("the Dask cluster has no workers")
    ordered = sorted(workers)
    return {name: ordered[i % len(ordered)] for i, name in enumerate(modalities)}


def train_distributed(
    client: Client,
    run_dir: Path,
    config: TrainingConfig,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train with one trainer actor per modality on `client`'s workers; returns the best-on-validation state."""
    run_dir = Path(run_dir)
    clock = time.perf_counter()
    problem = load_problem(run_dir)
    states = initial_states(problem, config)
    timings = {"start_seconds": time.perf_counter() - clock}
    workers = client.scheduler_info()["workers"]
    placement = place_modalities(problem.modalities, list(workers))
    per_worker = {address: list(placement.values()).count(address) for address in set(placement.values())}
    creations = {
        modality: client.submit(
            ModalityTrainer,
            str(run_dir),
            modality,
            config,
            states[modality],
            max(1, workers[address]["nthreads"] // per_worker[address]),
            actor=True,
            workers=[address],
            allow_other_workers=False,
            pure=False,
        )
        for modality, address in placement.items()
    }
    actors = {modality: future.result() for modality, future in creations.items()}
    starts = {modality: actor.state() for modality, actor in actors.items()}
    states = {modality: call.result() for modality, call in starts.items()}
    timings["trainer_start_seconds"] = time.perf_counter() - clock - timings["start_seconds"]
    for modality, address in placement.items():
        log(f"[distributed] trainer for {modality!r} ({problem.sizes[modality]} entities) on {address}")

    def advance(current: States) -> States:
        pending = {modality: actor.update(current) for modality, actor in actors.items()}
        return {modality: call.result() for modality, call in pending.items()}

    try:
        result = run_rounds(
            problem, states, advance, config, "distributed", log, checkpoint=run_dir / "checkpoints" / "best.npz"
        )
    finally:
        client.cancel(list(creations.values()))  # releases the actors and their memory on the workers
    result.timings = timings
    return result
