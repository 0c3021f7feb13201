"""Scheduled retraining: a cron deployment of `train_embeddings`, served by a long-running process.

Cron schedules need a real Prefect server (`prefect server start`, with PREFECT_API_URL pointing at it); the
temporary server a one-off run starts does not keep schedules. `serve_schedule` blocks, starting a flow run at
every tick, until interrupted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import serve
from prefect.deployments.runner import EntrypointType, RunnerDeployment

from hyperlearn.flows.hyperlearn_flow import train_embeddings


def build_deployment(
    spec_path: str | Path,
    out: str | Path,
    cron: str,
    *,
    name: str = "scheduled",
    data_root: str | Path | None = None,
    mode: str = "distributed",
    overrides: dict[str, Any] | None = None,
    allow_roots: list[Path] | None = None,
    wait: bool = False,
    scheduler: str | None = None,
    scheduler_file: str | Path | None = None,
    dashboard: bool = False,
) -> RunnerDeployment:
    """The deployment that retrains `spec_path` into `out` on `cron` (an invalid expression raises ValueError).

    Paths are made absolute, since scheduled runs need not start in this folder, and the flow is referenced by
    module path, so the runs find it wherever the package is installed.
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
    }
    return train_embeddings.to_deployment(
        name=name,
        cron=cron,
        parameters=parameters,
        description=f"Retrain HyperLearn embeddings for {parameters['spec_path']} on '{cron}'.",
        tags=["hyperlearn"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def serve_schedule(deployment: RunnerDeployment) -> None:
    """Serve a deployment from `build_deployment` until interrupted; its schedule stays active afterwards."""
    serve(deployment, pause_on_shutdown=False)
