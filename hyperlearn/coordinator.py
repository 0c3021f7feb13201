"""Distributed training (docs/method.md §3): one long-lived trainer actor per modality, pinned to its own Dask
worker; each round every trainer updates in parallel from the previous round's states (Jacobi block
coordinate descent), then the states — factors and biases, never graphs, encoders or optimisers — are
exchanged through Dask.

A trainer whose worker dies (killed, out of memory) is rebuilt on a live worker — the one the nanny restarted, or
the least busy — from its last `snapshot()` (the latest checkpoint's encoder, optimiser and generators; its
start when there is none yet), and the round's call is made again with the same states; the rebuild is recorded
in `recovered`. When no worker comes back in time, or the set has rebuilt `MAX_RECOVERIES` trainers already, the
round fails with TrainerLost naming the worker and the modality."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from distributed import Client, Future
from distributed.actor import Actor, BaseActorFuture

from hyperlearn.config import TrainingConfig
from hyperlearn.start import initial_states
from hyperlearn.problem import Problem, load_problem, with_validation_in_training
from hyperlearn.result import TrainResult
from hyperlearn.rounds import Log, States, run_rounds
from hyperlearn.rundir import RunDir
from hyperlearn.snapshots import Snapshot, prefixed, under
from hyperlearn.trainer import ModalityTrainer
from hyperlearn.warm_start import WarmStart
from hyperlearn.workers import cluster_workers


#: How long to wait on a trainer before asking the scheduler whether its worker is still there.
LIVENESS_CHECK_SECONDS = 2.0

#: How long a lost trainer waits for its worker to come back (a nanny restarts a killed one) before it is rebuilt
#: on the least busy live worker instead.
RECOVERY_WAIT_SECONDS = 20.0

#: Trainers one trainer set rebuilds before a further loss fails the run.
MAX_RECOVERIES = 3

#: The name of the rounds counter in a DaskTrainers snapshot (a trainer's own arrays are under its modality).
ROUNDS_KEY = "rounds"

TrainerCall = Callable[[str, Actor], BaseActorFuture]


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


def states_needed(problem: Problem, own: bool = True) -> dict[str, tuple[str, ...]]:
    """For each modality, the modalities whose states its trainer reads in a round: those sharing a relation with
    it, and with `own` its own (the proximal term's anchor: not needed when the proximal weight is 0). Sending only
    these keeps a round's bytes proportional to the relations' sizes, not to the number of modalities squared."""
    spanned = {
        modality: {m for r in problem.relations_of(modality) for m in r.meta.modalities} - {modality}
        for modality in problem.modalities
    }
    if own:
        spanned = {modality: others | {modality} for modality, others in spanned.items()}
    return {modality: tuple(m for m in problem.modalities if m in spanned[modality]) for modality in spanned}


class DaskTrainers:
    """One `ModalityTrainer` actor per modality on its placed worker: the `TrainerSet` of distributed training.

    The starting states are computed here, on the driver; each trainer's share of the run (its relations and
    graph, `RunDir.read_trainer_share`) is read here too and scattered to its worker, so workers never read the
    run directory: they may be on other hosts, in other working directories. After that only states cross the
    network, each trainer getting those it reads (`states_needed`). Rebuilt trainers are appended to `recovered`
    as {"modality", "round", "phase", "lost_worker", "worker", "from_round"}."""

    def __init__(
        self,
        client: Client,
        run: RunDir,
        problem: Problem,
        config: TrainingConfig,
        placement: dict[str, str],
        fit_validation: bool,
        recovered: list[dict[str, Any]] | None = None,
        log: Log = print,
        warm: WarmStart | None = None,
        resource: str | None = None,
    ) -> None:
        """`warm`: start from a parent version (hyperlearn.warm_start) instead of `initial_states`; `resource`:
        the worker resource each trainer requests (from `place_modalities`), or None."""
        self.client = client
        self.run = run
        self.config = config
        self.placement = dict(placement)
        self.fit_validation = fit_validation
        self.recovered = [] if recovered is None else recovered
        self.log = log
        self.rebuilt = 0
        self.rounds_done = 0
        self.snapshots: dict[str, Snapshot] = {}  # each trainer's latest snapshot: what a rebuilt one starts from
        self.snapshot_round = 0
        self.workers = len(cluster_workers(client))
        self.resource = resource
        self.needed = states_needed(problem, own=config.proximal > 0)
        self.shares: dict[str, Future] = {}  # each trainer's scattered share of the run
        fitted = with_validation_in_training(problem) if fit_validation else problem
        self.initial = initial_states(fitted, config) if warm is None else warm.states
        self.encoders = {} if warm is None else warm.encoders
        self.anchors = {} if warm is None else warm.anchors
        self.futures: dict[str, Future] = {m: self._submit(m, address, None) for m, address in self.placement.items()}
        self.actors = {modality: future.result() for modality, future in self.futures.items()}

    def _submit(self, modality: str, address: str, snapshot: Snapshot | None) -> Future:
        """Start the trainer of `modality` as an actor on `address`, sharing its threads with the others there."""
        threads = cluster_workers(self.client)[address]["nthreads"]
        sharing = list(self.placement.values()).count(address)
        splits = ("train", "validation") if self.fit_validation else ("train",)
        self.shares[modality] = self.client.scatter(
            self.run.read_trainer_share(modality, splits), workers=[address], hash=False
        )
        return self.client.submit(
            ModalityTrainer, self.shares[modality], self.config, self.initial[modality], max(1, threads // sharing),
            self.fit_validation, snapshot, self.encoders.get(modality), self.anchors.get(modality), actor=True, workers=[address],
            allow_other_workers=False, pure=False, resources={self.resource: 1} if self.resource else None,
        )

    def start(self) -> States:
        return self._collect(lambda modality, actor: actor.state())

    def round(self, states: States) -> States:
        updated = self._collect(
            lambda modality, actor: actor.update({m: states[m] for m in self.needed[modality]})
        )
        self.rounds_done += 1
        return updated

    def snapshot(self) -> Snapshot:
        """Every trainer's snapshot under its modality, and the number of rounds done."""
        self.snapshots = self._collect(lambda modality, actor: actor.snapshot())
        self.snapshot_round = self.rounds_done
        arrays: Snapshot = {ROUNDS_KEY: np.asarray(self.rounds_done)}
        for modality, part in self.snapshots.items():
            arrays.update(prefixed(modality, part))
        return arrays

    def restore(self, snapshot: Snapshot) -> None:
        parts = {modality: under(modality, snapshot) for modality in self.actors}
        self._collect(lambda modality, actor: actor.restore(parts[modality]))
        self.snapshots, self.rounds_done = parts, int(snapshot[ROUNDS_KEY])
        self.snapshot_round = self.rounds_done

    def weights(self) -> dict[str, dict[str, np.ndarray]]:
        return self._collect(lambda modality, actor: actor.weights())

    def _collect(self, call: TrainerCall) -> dict[str, Any]:
        """Every trainer's answer to `call`; a trainer whose worker has left the cluster is noticed within
        `LIVENESS_CHECK_SECONDS`, rebuilt (`_recover`) and asked again, instead of being waited for, for ever."""
        pending = {modality: call(modality, actor) for modality, actor in self.actors.items()}
        answers = {}
        for modality in list(pending):
            while modality not in answers:
                try:
                    answers[modality] = pending[modality].result(timeout=LIVENESS_CHECK_SECONDS)
                except TimeoutError:
                    if self.placement[modality] in cluster_workers(self.client):
                        continue
                    self._recover(modality, None)
                    pending[modality] = call(modality, self.actors[modality])
                except OSError as error:  # the call could not reach the actor's worker at all
                    self._recover(modality, error)
                    pending[modality] = call(modality, self.actors[modality])
        return answers

    def _recover(self, modality: str, cause: BaseException | None) -> None:
        """Rebuild the trainer of `modality`, whose worker is gone, on a live worker from its latest snapshot."""
        lost = self.placement[modality]
        if self.rebuilt >= MAX_RECOVERIES:
            raise self._lost(modality, f"{MAX_RECOVERIES} trainers were rebuilt already") from cause
        address = self._replacement_worker(lost)
        if address is None:
            raise self._lost(modality, f"no worker came back within {RECOVERY_WAIT_SECONDS:.0f} s") from cause
        self.client.cancel([self.futures[modality], self.shares[modality]])
        self.placement[modality] = address
        self.futures[modality] = self._submit(modality, address, self.snapshots.get(modality))
        self.actors[modality] = self.futures[modality].result()
        self.rebuilt += 1
        event = {
            "modality": modality, "round": self.rounds_done + 1, "phase": "refit" if self.fit_validation else "search",
            "lost_worker": lost, "worker": address, "from_round": self.snapshot_round if self.snapshots else 0,
        }
        self.recovered.append(event)
        self.log(f"[distributed] the worker {lost} training {modality!r} left the cluster; its trainer was rebuilt on "
                 f"{address} from round {event['from_round']}'s checkpoint, in round {event['round']}")

    def _replacement_worker(self, lost: str) -> str | None:
        """A live worker for a lost trainer: once the cluster has as many workers as it started with (the nanny
        restarted the lost one), or after `RECOVERY_WAIT_SECONDS`, the one holding the fewest trainers."""
        deadline = time.monotonic() + RECOVERY_WAIT_SECONDS
        while True:
            live = sorted(set(cluster_workers(self.client)) - {lost})
            if live and (len(live) >= self.workers or time.monotonic() > deadline):
                return min(live, key=lambda address: list(self.placement.values()).count(address))
            if time.monotonic() > deadline:
                return None
            time.sleep(0.2)

    def _lost(self, modality: str, why: str = "") -> TrainerLost:
        return TrainerLost(
            f"the worker {self.placement[modality]} training modality {modality!r} left the cluster; its encoder "
            f"and optimiser state are lost with it{f' ({why})' if why else ''}"
        )

    def close(self) -> None:
        """Cancel the actors' futures, which releases the actors and their memory on the workers."""
        self.client.cancel([*self.futures.values(), *self.shares.values()])
        self.actors.clear()


def train_distributed(
    client: Client,
    run: RunDir,
    config: TrainingConfig,
    log: Log = print,
    warm: WarmStart | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train with one trainer actor per modality on `client`'s workers (placed by `place_modalities`), from `warm`
    when given; returns the best-on-validation state (or, with `config.refit`, the model trained again on
    training + validation entries by fresh trainers). `resume`: carry on from the run's resume checkpoint (`run_rounds`)."""
    clock = time.perf_counter()
    problem = load_problem(run)
    timings = {"start_seconds": time.perf_counter() - clock}
    placement, resource = place_modalities(problem.sizes, cluster_workers(client), log)
    for modality, address in placement.items():
        log(f"[distributed] trainer for {modality!r} ({problem.sizes[modality]} entities) on {address}")

    recovered: list[dict[str, Any]] = []

    def make_trainers(fit_validation: bool) -> DaskTrainers:
        live = cluster_workers(client)
        here = placement if set(placement.values()) <= set(live) else place_modalities(problem.sizes, live, log)[0]
        return DaskTrainers(client, run, problem, config, here, fit_validation, recovered, log, warm, resource)

    result = run_rounds(problem, make_trainers, config, "distributed", log, checkpoints=run, resume=resume)
    result.timings = {**timings, **result.timings}
    result.recovered = recovered
    return result
