"""Scheduled and event-triggered retraining: a deployment of `train_embeddings`, served by a long-running process.

The deployment runs on its cron schedule (in an explicit timezone) and whenever the event
`hyperlearn.dataset.changed` arrives for resource `hyperlearn.dataset.<name>`, from the serving process's own
watcher (`--on-change`) or from any other system. It is named after the dataset, so that serving a dataset again
updates the same deployment, and it has a concurrency limit of one: a run asked for while another runs waits in
Prefect's queue (state AwaitingConcurrencySlot) rather than being cancelled, because it was asked for by a change
the running one may not have read. Schedules and triggers live on a real Prefect server (`prefect server start`,
with PREFECT_API_URL pointing at it); serving refuses to start without one, since on a temporary server they would
vanish when the command exits. Stopping the serving process (SIGTERM, SIGINT) cancels the runs it started and
marks any of the deployment's runs still Pending or Running as Crashed, so that none is left looking alive.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from pathlib import Path
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy, StateType
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.runner import Runner
from prefect.settings import get_current_settings
from prefect.states import Crashed

from hyperlearn.flows.events import DATASET_CHANGED, dataset_resource_id
from hyperlearn.flows.hyperlearn_flow import train_embeddings
from hyperlearn.flows.watch import InputWatcher

#: States of a run that a stopped serving process would leave looking alive.
UNFINISHED_STATES = [StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]


class ServerUnavailable(RuntimeError):
    """No real Prefect server to keep the schedule and triggers; the message says how to start one."""


def build_deployment(
    spec_path: str | Path,
    out: str | Path,
    dataset: str,
    *,
    cron: str | None = None,
    timezone: str = "UTC",
    name: str | None = None,
    data_root: str | Path | None = None,
    mode: str = "distributed",
    overrides: dict[str, Any] | None = None,
    allow_roots: list[Path] | None = None,
    wait: bool = False,
    scheduler: str | None = None,
    scheduler_file: str | Path | None = None,
    dashboard: bool = False,
    rmm_pool_size: str | None = None,
) -> RunnerDeployment:
    """The deployment that retrains `spec_path` (dataset `dataset`) into `out`: on `cron` in `timezone` when
    given (an invalid expression or timezone raises ValueError), and on every `hyperlearn.dataset.changed` event
    for the dataset. One run at a time; `name` defaults to the dataset's.

    Paths are made absolute, since the runs need not start in this folder, and the flow is referenced by module
    path, so the runs find it wherever the package is installed.
    """
    parameters: dict[str, Any] = {
        "spec_path": str(Path(spec_path).resolve()),
        "out": str(Path(out).resolve()),
        "data_root": None if data_root is None else str(Path(data_root).resolve()),
        "mode": mode,
        "overrides": overrides,
        "allow_roots": None if allow_roots is None else [str(Path(root).resolve()) for root in allow_roots],
        "wait": wait,
        "scheduler": scheduler,
        "scheduler_file": None if scheduler_file is None else str(Path(scheduler_file).resolve()),
        "dashboard": dashboard,
        "rmm_pool_size": rmm_pool_size,
    }
    trigger = DeploymentEventTrigger(
        name=f"retrain {dataset} when it changes",
        expect={DATASET_CHANGED},
        match={"prefect.resource.id": dataset_resource_id(dataset)},
    )
    when = f"on '{cron}' ({timezone}) and " if cron else ""
    return train_embeddings.to_deployment(
        name=name or dataset,
        schedule=CronSchedule(cron=cron, timezone=timezone) if cron else None,
        triggers=[trigger],
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        parameters=parameters,
        description=f"Retrain HyperLearn embeddings for {parameters['spec_path']} {when}on {DATASET_CHANGED} "
        f"for {dataset_resource_id(dataset)}, one run at a time.",
        tags=["hyperlearn", f"dataset:{dataset}"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def require_server() -> str:
    """The API address of the real Prefect server the schedule will live on; ServerUnavailable when none is set
    or it does not answer."""
    url = get_current_settings().api.url
    how = (
        "start one with `prefect server start` (add --host 127.0.0.1 to keep it local) and point "
        "PREFECT_API_URL at it, e.g. `export PREFECT_API_URL=http://127.0.0.1:4200/api`"
    )
    if not url:
        raise ServerUnavailable(
            "hyperlearn schedule needs a running Prefect server to keep the schedule and triggers (a temporary "
            f"one would vanish with this command): PREFECT_API_URL is not set; {how}"
        )
    with get_client(sync_client=True) as client:
        error = client.api_healthcheck()
    if error is not None:
        raise ServerUnavailable(f"the Prefect server at PREFECT_API_URL={url} does not answer ({error}); {how}")
    return url


def serve_schedule(deployment: RunnerDeployment, watcher: InputWatcher | None = None, poll: float = 10.0) -> None:
    """Serve `deployment` until SIGTERM or SIGINT; with `watcher`, check the inputs every `poll` seconds
    meanwhile. The schedule and trigger stay active on the server afterwards; no run of the deployment is left
    Pending or Running."""
    require_server()
    runner = Runner(pause_on_shutdown=False)
    runner.add_deployment(deployment)
    stop_watching = threading.Event()
    watching = None
    if watcher is not None:
        watching = threading.Thread(target=watcher.watch, args=(poll, stop_watching), name="input-watcher", daemon=True)
        watching.start()
    print(f"serving deployment '{deployment.flow_name}/{deployment.name}': {deployment.description}")
    if watcher is not None:
        print(f"watching {watcher.spec_path} and its sources every {poll:g} s")
    print("stop with Ctrl-C or SIGTERM", flush=True)
    try:
        asyncio.run(_run_until_signalled(runner))
    finally:
        stop_watching.set()
        if watching is not None:
            watching.join()
        try:
            stuck = crash_unfinished_runs(deployment)
        except Exception as error:  # noqa: BLE001 - the server may be what stopped serving; say so, keep its error
            print(f"could not check for runs left unfinished ({type(error).__name__}: {error}); look for runs of "
                  f"{deployment.flow_name}/{deployment.name} still Running on the server")
        else:
            if stuck:
                print(f"marked as crashed, unfinished when serving stopped: {', '.join(stuck)}")


async def _run_until_signalled(runner: Runner) -> None:
    """Run the runner until SIGTERM or SIGINT, then stop it on its own event loop: it cancels the runs it
    started (their processes are stopped and the runs marked Cancelled) and returns."""
    loop = asyncio.get_running_loop()
    serving = asyncio.create_task(runner.start())
    while not runner.started and not serving.done():  # start() installs its own SIGTERM handler first
        await asyncio.sleep(0.05)
    stopping: list[asyncio.Task] = []

    def stop() -> None:
        if not stopping and runner.started:
            print("stopping: cancelling the runs this process started")
            stopping.append(asyncio.ensure_future(runner.astop()))

    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(stop_signal, stop)
    try:
        await serving
    finally:
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(stop_signal)


def crash_unfinished_runs(deployment: RunnerDeployment) -> list[str]:
    """Mark every run of the served deployment still Pending, Running or Cancelling as Crashed; return their
    names. Called after the runner stopped, when no process of this server runs them any more."""
    with get_client(sync_client=True) as client:
        served = client.read_deployment_by_name(f"{deployment.flow_name}/{deployment.name}")
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[served.id])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=UNFINISHED_STATES))),
        )
        for run in runs:
            client.set_flow_run_state(
                run.id, Crashed(message="the serving process stopped while this run was unfinished"), force=True
            )
    return [run.name for run in runs]
