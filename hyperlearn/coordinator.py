"""Distributed training (docs/method.md §3): one long-lived trainer actor per modality, pinned to its own Dask
worker; each round every trainer updates in parallel from the previous round's states (Jacobi block
coordinate descent), then the states — factors and biases, never graphs, encoders or optimisers — are
exchanged through Dask."""

from __future__ import annotations

import time

from distributed import Client, Future
from distributed.actor import BaseActorFuture

from hyperlearn.config import TrainingConfig
from hyperlearn.start import initial_states
from hyperlearn.problem import Problem, load_problem, with_validation_in_training
from hyperlearn.result import TrainResult
from hyperlearn.rounds import Log, States, run_rounds
from hyperlearn.rundir import RunDir
from hyperlearn.trainer import ModalityTrainer


#: How long to wait on a trainer before asking the scheduler whether its worker is still there.
LIVENESS_CHECK_SECONDS = 2.0


class TrainerLost(RuntimeError):
    """A trainer's worker left the cluster (killed, crashed, out of memory); the message names both."""


#: Worker resources a trainer asks for, in order of preference: the first that some worker of the cluster declares
#: (`dask worker --resources "trainer=1"`, or "GPU=1" on GPU hosts) restricts the trainers to the workers declaring
#: it, each hosting as many trainers as it declares before any worker hosts more.
TRAINER_RESOURCES = ("trainer", "GPU")


def trainer_resource(workers: dict[str, dict]) -> str | None:
    """The resource trainers request on this cluster (`TRAINER_RESOURCES`); None when no worker declares one."""
    declared = {name for info in workers.values() for name in info.get("resources", {})}
    return next((name for name in TRAINER_RESOURCES if name in declared), None)


def place_modalities(
    sizes: dict[str, int], workers: dict[str, dict], log: Log = print
) -> tuple[dict[str, str], str | None]:
    """Each modality's worker (`workers`: the scheduler's worker info by address), and the resource the trainers
    request. Workers declaring the trainer resource are the only candidates, with that many slots each (one slot
    per worker when no worker declares one); the largest modalities are placed first, each on the least loaded
    candidate (trainers per slot), so the largest are spread before any worker hosts two. Modalities beyond the
    slots share workers, which `log` reports. Ties go to the lower address, so the placement is repeatable."""
    resource = trainer_resource(workers)
    slots = {
        address: float(info.get("resources", {}).get(resource, 0)) if resource else 1.0
        for address, info in workers.items()
    }
    slots = {address: n for address, n in sorted(slots.items()) if n > 0}
    if not slots:
        raise RuntimeError("the Dask cluster has no workers")
    placed: dict[str, list[str]] = {address: [] for address in slots}
    for modality in sorted(sizes, key=lambda m: (-sizes[m], m)):
        address = min(slots, key=lambda a: (len(placed[a]) / slots[a], a))
        placed[address].append(modality)
    if resource:
        log(f"[distributed] trainers request the {resource!r} resource: {len(slots)} of {len(workers)} worker(s) "
            "declare it")
    shared = {address: names for address, names in placed.items() if len(names) > slots[address]}
    for address, names in shared.items():
        log(f"[distributed] {len(sizes)} trainers on {len(slots)} worker(s): {', '.join(map(repr, names))} share "
            f"{address}")
    where = {m: address for address, names in placed.items() for m in names}
    return {m: where[m] for m in sizes}, resource


def states_needed(problem: Problem) -> dict[str, tuple[str, ...]]:
    """For each modality, the modalities whose states its trainer reads in a round: its own (the proximal term's
    anchor) and those sharing a relation with it. Sending only these keeps a round's bytes proportional to the
    relations' sizes, not to the number of modalities squared."""
    spanned = {
        modality: {modality, *(m for r in problem.relations_of(modality) for m in r.meta.modalities)}
        for modality in problem.modalities
    }
    return {modality: tuple(m for m in problem.modalities if m in spanned[modality]) for modality in spanned}


class DaskTrainers:
    """One `ModalityTrainer` actor per modality on its placed worker: the `TrainerSet` of distributed training.

    The starting states are computed here, on the driver; each trainer's share of the run (its relations and
    graph, `RunDir.read_trainer_share`) is read here too and scattered to its worker, so workers never read the
    run directory: they may be on other hosts, in other working directories. After that only states cross the
    network."""

    def __init__(
        self,
        client: Client,
        run: RunDir,
        problem: Problem,
        config: TrainingConfig,
        placement: dict[str, str],
        fit_validation: bool,
        resource: str | None = None,
    ) -> None:
        """`resource`: the worker resource each trainer requests (from `place_modalities`), or None."""
        self.client = client
        self.placement = placement
        self.needed = states_needed(problem)
        fitted = with_validation_in_training(problem) if fit_validation else problem
        states = initial_states(fitted, config)
        splits = ("train", "validation") if fit_validation else ("train",)
        workers = client.scheduler_info()["workers"]
        per_worker = {address: list(placement.values()).count(address) for address in set(placement.values())}
        self.futures: list[Future] = []
        actors = []
        for modality, address in placement.items():
            threads = max(1, workers[address]["nthreads"] // per_worker[address])
            share = client.scatter(run.read_trainer_share(modality, splits), workers=[address], hash=False)
            actor = client.submit(
                ModalityTrainer, share, config, states[modality], threads, fit_validation,
                actor=True, workers=[address], allow_other_workers=False, pure=False,
                resources={resource: 1} if resource else None,
            )
            self.futures += [share, actor]
            actors.append(actor)
        self.actors = {modality: future.result() for modality, future in zip(placement, actors)}

    def start(self) -> States:
        return self._collect({modality: actor.state() for modality, actor in self.actors.items()})

    def round(self, states: States) -> States:
        return self._collect(
            {
                modality: actor.update({m: states[m] for m in self.needed[modality]})
                for modality, actor in self.actors.items()
            }
        )

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


def train_distributed(client: Client, run: RunDir, config: TrainingConfig, log: Log = print) -> TrainResult:
    """Train with one trainer actor per modality on `client`'s workers (placed by `place_modalities`); returns
    the best-on-validation state (or, with `config.refit`, the model trained again on training + validation
    entries by fresh trainers)."""
    clock = time.perf_counter()
    problem = load_problem(run)
    timings = {"start_seconds": time.perf_counter() - clock}
    placement, resource = place_modalities(problem.sizes, client.scheduler_info()["workers"], log)
    for modality, address in placement.items():
        log(f"[distributed] trainer for {modality!r} ({problem.sizes[modality]} entities) on {address}")

    def make_trainers(fit_validation: bool) -> DaskTrainers:
        return DaskTrainers(client, run, problem, config, placement, fit_validation, resource)

    result = run_rounds(problem, make_trainers, config, "distributed", log, checkpoints=run)
    result.timings = {**timings, **result.timings}
    return result
