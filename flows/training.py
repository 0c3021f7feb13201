"""Training a prepared run directory in either mode, as plain functions the flow's train task wraps.

Distributed mode trains on the run's cluster (`hyperlearn.flows.cluster.choose_cluster`): an existing one, which
it leaves running, or a local one with one worker per modality, started in the background by `training_cluster`
while the run ingests, so that its workers spawn and import the trainer meanwhile; joint mode trains every
encoder in this process, the yardstick the distributed mode is compared against.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, get_args

from distributed import Client, KilledWorker
from distributed.comm.core import CommClosedError
from distributed.deploy import Cluster

from hyperlearn.flows.cluster import (
    ClusterChoice,
    describe_existing,
    make_cluster,
    trim_threshold_warning,
    visible_gpu_count,
    workers_device,
)
from hyperlearn.arrays import cupy_installed
from hyperlearn.config import TrainingConfig, check_memory
from hyperlearn.coordinator import TrainerLost, train_distributed
from hyperlearn.joint import train_joint
from hyperlearn.model import resolve_device
from hyperlearn.pipeline.catalog import EntityCatalog
from hyperlearn.pipeline.outputs import read_encoder_weights
from hyperlearn.pipeline.published import open_version
from hyperlearn.problem import load_problem
from hyperlearn.result import TrainResult
from hyperlearn.rundir import RunDir
from hyperlearn.warm_start import IncompatibleParent, ParentModality, ParentModel, WarmStart, warm_start

Mode = Literal["distributed", "joint"]
MODES: tuple[str, ...] = get_args(Mode)

#: Failures of the machinery rather than of the inputs, which a second attempt may not meet: a worker that left
#: the cluster (its nanny starts another), a connection to one that closed, a call that timed out. (A local cluster
#: whose workers do not start in time is started once more by `_connect` itself.)
#: Anything else (a bad spec, bad data, a rank that does not fit) fails the same way again.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (TrainerLost, KilledWorker, CommClosedError, TimeoutError)


def is_transient(error: BaseException | None) -> bool:
    """Whether a training failure is worth another attempt (see TRANSIENT_ERRORS)."""
    return isinstance(error, TRANSIENT_ERRORS)


def run_device(config: TrainingConfig) -> str:
    """The device a run in this process (joint, or on a local cluster) trains on, "cpu" or "cuda":
    `config.device` with "auto" resolved, the one place where the local cluster and the trainers learn it."""
    return resolve_device(config.device).type


def graph_device(config: TrainingConfig) -> str:
    """The device this process builds the run's graphs on: "cuda" (CuPy) when the run's device resolves to CUDA
    here, a GPU is visible and CuPy (the `gpu` extra) is installed; else "cpu", which gives the same graphs. So
    a CPU-only driver of a GPU cluster builds them on its CPU."""
    usable = visible_gpu_count() > 0 and cupy_installed()
    return "cuda" if usable and run_device(config) == "cuda" else "cpu"


@dataclass(frozen=True)
class TrainingCluster:
    """The cluster a distributed run trains on, connected: its client, the device its trainers use, and the
    local cluster this run started (None for an existing cluster, which the run leaves running)."""

    client: Client
    device: str
    started: Cluster | None


@contextmanager
def training_cluster(
    n_modalities: int,
    config: TrainingConfig,
    mode: Mode,
    choice: ClusterChoice = ClusterChoice(),
    log: Callable[[str], None] = print,
) -> Iterator[Future[TrainingCluster] | None]:
    """For distributed mode, the run's cluster (`choice`), connecting (or, for a local one, starting) in the
    background from the beginning of the block; on leaving, the client is closed, and the cluster too if this
    run started it (a teardown that fails is logged, never raised). None for joint mode."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if mode == "joint":
        yield None
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cluster-start") as starter:
        cluster = starter.submit(_connect, n_modalities, config, choice, log)
        try:
            yield cluster
        finally:
            if cluster.exception() is None:
                connected = cluster.result()
                _close(connected.client, log)
                if connected.started is not None:
                    _close(connected.started, log)


def _connect(
    n_modalities: int, config: TrainingConfig, choice: ClusterChoice, log: Callable[[str], None]
) -> TrainingCluster:
    if not choice.existing:
        device = run_device(config)

        def start() -> Cluster:
            return make_cluster(
                n_modalities, device, dashboard=choice.dashboard, rmm_pool_size=choice.rmm_pool_size, log=log  # type: ignore[arg-type]
            )

        try:
            started = start()
        except TimeoutError as error:  # a worker that did not start in time (a loaded machine): once more
            log(f"the training cluster did not start ({error}); starting another")
            started = start()
        try:
            # The default client (as every Client is, unless told otherwise): the trainer actors' handles find it.
            return TrainingCluster(Client(started), device, started)
        except BaseException:
            _close(started, log)
            raise
    client = choice.connect()
    try:
        log(describe_existing(client, choice))
        warning = trim_threshold_warning(client)
        if warning:
            log(f"warning: {warning}")
        return TrainingCluster(client, workers_device(client, config.device), None)
    except BaseException:
        _close(client, log)
        raise


def load_parent(version: RunDir) -> ParentModel:
    """A published version's embeddings, biases and resumable weights, as `hyperlearn.warm_start` takes them."""
    published = open_version(version.path)
    modalities = {}
    for modality in published.modalities:
        biases = {
            name: published.biases(name, modality)
            for name, scoring in published.relations.items()
            if modality in scoring.modalities
        }
        modalities[modality] = ParentModality(
            keys=published.keys(modality).to_numpy(dtype=object),
            embeddings=published.embeddings(modality),
            biases=biases,
            weights=read_encoder_weights(version.path, modality),
        )
    return ParentModel(version=version.path.name, rank=int(published.description["rank"]), modalities=modalities)


def start_from_parent(
    run: RunDir, parent: RunDir, config: TrainingConfig, log: Callable[[str], None] = print
) -> tuple[WarmStart | None, str | None]:
    """The warm start of the prepared run in `run` from the published version `parent`, or (None, the reason)
    when the parent cannot seed it: the run then starts cold."""
    try:
        model = load_parent(parent)
    except (FileNotFoundError, ValueError) as error:  # a version from before warm start, or damaged
        reason = f"parent {parent.path.name} is unreadable: {error}"
        log(f"cold start: {reason}")
        return None, reason
    problem = load_problem(run, splits=("train",))
    keys = {m: EntityCatalog.load(run.catalog, m).keys.to_numpy(dtype=object) for m in problem.modalities}
    try:
        warm = warm_start(model, problem, keys, config)
    except IncompatibleParent as error:
        reason = str(error)
        log(f"cold start: {reason}")
        return None, reason
    resumed = sorted(warm.encoders)
    log(f"warm start from {warm.parent}: {len(warm.warm_started)} modalities keep their rows "
        f"({', '.join(warm.warm_started)}; encoders resumed: {', '.join(resumed) or 'none'}), "
        f"new: {', '.join(warm.new) or 'none'}")
    return warm, None


def train(
    run: RunDir,
    config: TrainingConfig,
    *,
    mode: Mode,
    cluster: Future[TrainingCluster] | None = None,
    log: Callable[[str], None] = print,
    warm: WarmStart | None = None,
    resume: bool = False,
) -> tuple[TrainResult, str]:
    """Train the run in `run` (distributed: on `cluster`, from `training_cluster`), from `warm` when given (see
    `start_from_parent`), else cold; return the result and the device it ran on. A rank whose parameters would
    not fit in memory for the run's entity counts raises MemoryBudgetError first. `resume`: carry on from the
    run's resume checkpoint when it has one."""
    check_memory(run.entity_counts(), config)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if mode == "joint":
        device = run_device(config)
        return train_joint(run, config.replace(device=device), log=log, warm=warm, resume=resume), device
    if cluster is None:
        raise ValueError("distributed training needs the cluster from training_cluster")
    connected = cluster.result()
    result = train_distributed(
        connected.client, run, config.replace(device=connected.device), log=log, warm=warm, resume=resume
    )
    return result, connected.device


def _close(closable: Client | Cluster, log: Callable[[str], None]) -> None:
    """Shut a client or cluster down; a teardown that fails (a worker that will not stop in time) is logged,
    never raised: it must not discard a finished training, nor hide the error that ended an unfinished one."""
    try:
        closable.close()
    except Exception as error:  # noqa: BLE001 - whatever teardown raises, the run's outcome stands
        log(f"closing the Dask {type(closable).__name__} failed, ignored: {type(error).__name__}: {error}")

