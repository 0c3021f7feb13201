"""Distributed training (docs/method.md §3): one long-lived trainer actor per modality, pinned to its own Dask
worker; each round every trainer updates in parallel from the previous round's states (Jacobi block
coordinate descent), then the states — factors and biases, never graphs, encoders or optimisers — are
exchanged through Dask."""

from __future__ import annotations

import time

import numpy as np
from distributed import Client, Future
from distributed.actor import BaseActorFuture

from hyperlearn.config import TrainingConfig
from hyperlearn.start import initial_states
from hyperlearn.problem import Problem, load_problem, with_validation_in_training
from hyperlearn.result import TrainResult
from hyperlearn.rounds import Log, States, run_rounds
from hyperlearn.rundir import RunDir
from hyperlearn.trainer import ModalityTrainer
from hyperlearn.warm_start import WarmStart


#: How long to wait on a trainer before asking the scheduler whether its worker is still there.
LIVENESS_CHECK_SECONDS = 2.0


class TrainerLost(RuntimeError):
    """A trainer's worker left the cluster (killed, crashed, out of memory); the message names both."""


def place_modalities(modalities: list[str], workers: list[str]) -> dict[str, str]:
    """Modality i goes to worker i (round-robin when there are fewer workers than modalities)."""
    if not workers:
        raise RuntimeError("the Dask cluster has no workers")
    ordered = sorted(workers)
    return {name: ordered[i % len(ordered)] for i, name in enumerate(modalities)}


class DaskTrainers:
    """One `ModalityTrainer` actor per modality on its placed worker: the `TrainerSet` of distributed training.

    The starting states are computed here, on the driver, and sent once; each actor then loads its own
    relations and graph from the run directory, and only states cross the network."""

    def __init__(
        self,
        client: Client,
        run: RunDir,
        problem: Problem,
        config: TrainingConfig,
        placement: dict[str, str],
        fit_validation: bool,
        warm: WarmStart | None = None,
    ) -> None:
        """`warm`: start from a parent version (hyperlearn.warm_start) instead of `initial_states`."""
        self.client = client
        self.placement = placement
        fitted = with_validation_in_training(problem) if fit_validation else problem
        states = initial_states(fitted, config) if warm is None else warm.states
        encoders = {} if warm is None else warm.encoders
        workers = client.scheduler_info()["workers"]
        per_worker = {address: list(placement.values()).count(address) for address in set(placement.values())}
        self.futures: list[Future] = []
        for modality, address in placement.items():
            threads = max(1, workers[address]["nthreads"] // per_worker[address])
            self.futures.append(
                client.submit(
                    ModalityTrainer, run, modality, config, states[modality], threads, fit_validation,
                    encoders.get(modality), actor=True, workers=[address], allow_other_workers=False, pure=False,
                )
            )
        self.actors = {modality: future.result() for modality, future in zip(placement, self.futures)}

    def start(self) -> States:
        return self._collect({modality: actor.state() for modality, actor in self.actors.items()})

    def round(self, states: States) -> States:
        return self._collect({modality: actor.update(states) for modality, actor in self.actors.items()})

    def weights(self) -> dict[str, dict[str, np.ndarray]]:
        return self._collect({modality: actor.weights() for modality, actor in self.actors.items()})

    def _collect(self, pending: dict[str, BaseActorFuture]) -> States:
        """Every trainer's answer; a trainer whose worker has left the cluster raises TrainerLost within
        `LIVENESS_CHECK_SECONDS` instead of being waited for, for ever."""
        states = {}
        for modality, call in pending.items():
            while modality not in states:
                try:
                    states[modality] = call.result(timeout=LIVENESS_CHECK_SECONDS)
                except TimeoutError:
                    if self.placement[modality] not in self.client.scheduler_info()["workers"]:
                        raise self._lost(modality) from None
                except OSError as error:  # the call could not reach the actor's worker at all
                    raise self._lost(modality) from error
        return states

    def _lost(self, modality: str) -> TrainerLost:
        return TrainerLost(
            f"the worker {self.placement[modality]} training modality {modality!r} left the cluster; its encoder "
            "and optimiser state are lost with it"
        )

    def close(self) -> None:
        """Cancel the actors' futures, which releases the actors and their memory on the workers."""
        self.client.cancel(self.futures)
        self.actors.clear()


def train_distributed(
    client: Client, run: RunDir, config: TrainingConfig, log: Log = print, warm: WarmStart | None = None
) -> TrainResult:
    """Train with one trainer actor per modality on `client`'s workers, from `warm` when given; returns the best-on-validation state
    (or, with `config.refit`, the model trained again on training + validation entries by fresh trainers)."""
    clock = time.perf_counter()
    problem = load_problem(run)
    timings = {"start_seconds": time.perf_counter() - clock}
    placement = place_modalities(problem.modalities, list(client.scheduler_info()["workers"]))
    for modality, address in placement.items():
        log(f"[distributed] trainer for {modality!r} ({problem.sizes[modality]} entities) on {address}")

    def make_trainers(fit_validation: bool) -> DaskTrainers:
        return DaskTrainers(client, run, problem, config, placement, fit_validation, warm)

    result = run_rounds(problem, make_trainers, config, "distributed", log, checkpoints=run)
    result.timings = {**timings, **result.timings}
    return result
