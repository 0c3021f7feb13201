"""`hyperlearn schedule --on-change` served against a real Prefect server (`prefect server start`, with its
trigger and concurrency services), on a tiny spec whose runs take seconds: a new source file publishes a new
version, two events emitted by hand at once run one at a time, and Ctrl-C while the second runs leaves no run
looking alive.

The tests share one server and one serving process and run in file order, each waiting for the runs the
previous ones asked for; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hyperlearn.flows.temporary_server import TemporaryServer, _free_port

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

SPEC = """\
name: tiny
modalities: [{name: user}, {name: item}]
relations:
- name: rating
  modalities: {user: user_id, item: item_id}
  value: rating
  loss: squared
  source: {path: "ratings/*.csv", format: csv}
split: {test: 0.1, validation: 0.1, seed: 0}
training: {rank: 2, rounds: 2, local_steps: 1, conv_width: 4, lstm_width: 4, init_iterations: 1, patience: 2, init_from: none}
"""
DEPLOYMENT = "hyperlearn-train-embeddings/tiny"
#: Bound on how long one tiny run may take from its trigger to its end on a loaded two-core machine.
RUN_SECONDS = 240


def _ratings(seed: int, rows: int = 300) -> str:
    import numpy as np

    rng = np.random.default_rng(seed)
    lines = [f"u{rng.integers(40)},i{rng.integers(30)},{rng.uniform(1, 5):.2f}" for _ in range(rows)]
    return "user_id,item_id,rating\n" + "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `prefect server start` on a free loopback port, with its own home; the API address."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    environment = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "0",
                   # a run queued behind another asks for its slot again every 2 s (default 30 s)
                   "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "2"}
    environment.pop("PREFECT_API_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    real = TemporaryServer(process, port)
    try:
        real.wait_until_healthy(timeout=120)
        with temporary_settings(updates={PREFECT_API_URL: real.api_url}):
            yield real.api_url
    finally:
        real.stop()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    (root / "ratings").mkdir()
    (root / "ratings" / "part-1.csv").write_text(_ratings(0))
    (root / "tiny.yaml").write_text(SPEC)
    return root


@pytest.fixture(scope="module")
def serving(server: str, dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`hyperlearn schedule --on-change --poll 1` in its own session (so that a Ctrl-C reaches its whole
    group, as in a terminal), until the deployment is on the server."""
    out = tmp_path_factory.mktemp("out")
    log = (out / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "hyperlearn.flows.cli", "schedule", str(dataset / "tiny.yaml"), "--out", str(out),
         "--mode", "joint", "--on-change", "--poll", "1"],
        env={**os.environ, "PREFECT_API_URL": server, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        _wait_for(lambda: _deployment_id() is not None, 120, "the served deployment", process)
        yield {"process": process, "out": out / "tiny", "log": out / "serve.log"}
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def _deployment_id() -> Any:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_deployment_by_name(DEPLOYMENT).id
        except ObjectNotFound:
            return None


def _runs() -> list[Any]:
    """The deployment's flow runs, oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[_deployment_id()])))
    return sorted(runs, key=lambda run: run.created)


def _history(run: Any) -> list[str]:
    """The names of the states a run went through, in order."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return [state.name for state in client.read_flow_run_states(run.id)]


def _finished(runs: list[Any]) -> list[Any]:
    return [run for run in runs if run.state.is_final()]


def _wait_for(
    condition: Callable[[], Any], seconds: float, what: str, process: subprocess.Popen | None = None, every: float = 1
) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the serving process exited ({process.returncode}) while waiting for {what}")
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"no {what} within {seconds:.0f} s")


def _emit_by_hand(server: str) -> None:
    """The README's command, as another system would run it."""
    subprocess.run(
        [sys.executable, "-m", "prefect", "event", "emit", "hyperlearn.dataset.changed",
         "--resource-id", "hyperlearn.dataset.tiny"],
        env={**os.environ, "PREFECT_API_URL": server}, check=True, capture_output=True, timeout=120,
    )


def _versions(dataset_dir: Path) -> list[str]:
    return sorted(path.name for path in dataset_dir.glob("2*Z"))


def test_a_new_file_matching_a_glob_source_publishes_a_new_version(serving: dict[str, Any], dataset: Path):
    assert not _runs()
    (dataset / "ratings" / "part-2.csv").write_text(_ratings(1))
    [run] = _wait_for(lambda: _finished(_runs()), RUN_SECONDS, "finished run after adding a source file",
                      serving["process"])
    assert run.state.name == "Completed", serving["log"].read_text()[-3000:]
    [version] = _versions(serving["out"])
    manifest = json.loads((serving["out"] / version / "manifest.json").read_text())
    assert (serving["out"] / "latest").resolve().name == version
    assert manifest["version"] == version


def test_the_published_event_names_the_version(server: str, serving: dict[str, Any]):
    from prefect.client.orchestration import get_client

    [version] = _versions(serving["out"])

    def published_events() -> list[dict[str, Any]]:
        with get_client(sync_client=True) as client:
            response = client._client.post(
                "/events/filter", json={"filter": {"event": {"name": ["hyperlearn.embeddings.published"]}}}
            )
        return response.json()["events"]

    [event] = _wait_for(published_events, 30, "hyperlearn.embeddings.published event")
    assert event["resource"]["prefect.resource.id"] == "hyperlearn.dataset.tiny"
    assert event["payload"]["version"] == version
    assert event["payload"]["path"] == str(serving["out"] / version)


def test_two_events_emitted_by_hand_at_once_run_one_at_a_time(server: str, serving: dict[str, Any]):
    _emit_by_hand(server)
    _emit_by_hand(server)

    def one_finished_and_the_other_running() -> list[Any]:
        runs = _runs()
        return len(runs) == 3 and runs[1].state.is_final() and runs[2].state.is_running() and runs

    _, first, second = _wait_for(one_finished_and_the_other_running, 2 * RUN_SECONDS,
                                 "second run finished and third running", serving["process"], every=0.25)
    assert first.state.name == "Completed", serving["log"].read_text()[-3000:]
    assert "AwaitingConcurrencySlot" in _history(second)
    assert second.start_time >= first.end_time
    assert len(_versions(serving["out"])) == 2


def test_ctrl_c_of_the_serving_process_leaves_no_run_running(server: str, serving: dict[str, Any]):
    """Right after the previous test saw its second run Running: Ctrl-C reaches the serving process's group."""
    os.killpg(serving["process"].pid, signal.SIGINT)
    serving["process"].wait(120)
    runs = _runs()
    assert all(run.state.is_final() for run in runs), [(run.name, run.state.name) for run in runs]
    assert runs[-1].state.type.value in ("CANCELLED", "CRASHED"), serving["log"].read_text()[-3000:]
    assert len(_versions(serving["out"])) == 2
    assert (serving["out"] / "latest").resolve().name == _versions(serving["out"])[-1]
    # The cancelled run either cleaned up (Ctrl-C reached it) or was killed by the runner, leaving at most its own
    # staging folder, which the next run resumes or removes under the lock (README, "What the pipeline guarantees").
    assert len(list(serving["out"].glob(".staging-*"))) <= 1
