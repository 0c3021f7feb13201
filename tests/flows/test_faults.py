"""Faults injected into real `hyperlearn run` commands and into publishing, and what must hold after each.

After every fault: the `latest` a reader saw before is intact (or, past publishing's commit point, the new one),
every published version's catalog ids agree with the persistent catalog, every version's rows are accounted
for, and nothing the command started outlives it (no process, no listening port).

The commands run the small demo dataset with a few tiny rounds; the publish steps are cut by the documented
injection point `HYPERLEARN_FAULT_AT` (`hyperlearn.pipeline.publish`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest

from hyperlearn.pipeline.catalog import EntityCatalog
from hyperlearn.pipeline.lock import dataset_lock
from hyperlearn.pipeline.publish import FAULT_ENVIRONMENT, FAULT_EXIT_CODE, PUBLISH_STEPS
from hyperlearn.rounds import TIMING_KEYS
from hyperlearn.rundir import DatasetDir, RunDir

HYPERLEARN = str(Path(sys.executable).parent / "hyperlearn")
TRAINING = [
    "--rank", "4", "--rounds", "8", "--patience", "8", "--local-steps", "6", "--diffusion-steps", "2",
    "--conv-width", "8", "--lstm-width", "8", "--init-iterations", "2", "--checkpoint-every", "1", "--init-from", "none",
]


class Command:
    """One `hyperlearn run` in its own session, its output in a file, its descendants remembered."""

    def __init__(self, spec: Path, out: Path, log: Path, *extra: str, environment: dict[str, str] | None = None):
        env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"} | (environment or {})
        self.log = log
        with open(log, "w") as output:
            self.process = subprocess.Popen(
                [HYPERLEARN, "run", str(spec), "--out", str(out), *TRAINING, *extra],
                stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
        self.descendants: dict[int, psutil.Process] = {}
        self.ports: set[int] = set()

    def watch(self) -> None:
        """Remember every process the command has started so far, and the ports they listen on."""
        try:
            for child in psutil.Process(self.process.pid).children(recursive=True):
                self.descendants.setdefault(child.pid, child)
                try:
                    self.ports |= {c.laddr.port for c in child.net_connections("tcp") if c.status == "LISTEN"}
                except psutil.Error:
                    pass
        except psutil.Error:
            pass

    def wait_for(self, condition, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            self.watch()
            assert self.process.poll() is None, f"the command ended first:\n{self.output()}"
            assert time.monotonic() < deadline, f"timed out:\n{self.output()}"
            time.sleep(0.1)
        self.watch()

    def finish(self, timeout: float = 300) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            self.watch()
            assert time.monotonic() < deadline, f"did not finish:\n{self.output()}"
            time.sleep(0.2)
        return self.process.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def assert_nothing_left(self, within: float = 15) -> None:
        """No process the command started is alive, and none of their ports is listened on."""
        deadline = time.monotonic() + within
        while True:
            alive = [p for p in self.descendants.values() if _running(p)]
            listening = {c.laddr.port for c in psutil.net_connections("tcp") if c.status == "LISTEN"} & self.ports
            if not alive and not listening:
                return
            assert time.monotonic() < deadline, f"left behind: processes {alive}, ports {listening}"
            time.sleep(0.2)


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def latest(dataset: DatasetDir) -> str | None:
    return os.readlink(dataset.latest) if dataset.latest.is_symlink() else None


def versions(dataset: DatasetDir) -> list[str]:
    return sorted(
        p.name for p in dataset.path.iterdir()
        if p.is_dir() and not p.is_symlink() and not p.name.startswith(".") and p.name != "catalog"
    )


def check_invariants(dataset: DatasetDir, expected_latest: str | None) -> None:
    """`latest` names `expected_latest`, a complete version; every version's catalog is a prefix of the
    persistent one (same id, same key) and its embeddings carry exactly its catalog's ids and keys; every
    relation's rows are accounted for, down to the entries in the version's tensors."""
    assert latest(dataset) == expected_latest
    if expected_latest is not None:
        assert dataset.version(expected_latest).manifest.exists()
    for name in versions(dataset):
        version = dataset.version(name)
        manifest = json.loads(version.manifest.read_text())
        for modality in manifest["entities"]:
            own = EntityCatalog.load(version.catalog, modality).keys
            persistent = EntityCatalog.load(dataset.catalog, modality).keys
            assert list(persistent[: len(own)]) == list(own), f"{name}/{modality}: ids moved"
            table = pq.read_table(version.embedding_dir(modality))
            assert table.column("entity_id").to_pylist() == list(range(len(own)))
            assert table.column("key").to_pylist() == list(own)
        for relation in manifest["ingest"]["relations"]:
            assert relation["rows_read"] == relation["rows_accepted"] + relation["rows_quarantined"]
            assert relation["entries_total"] == relation["rows_accepted"] - relation["duplicates_merged"]
            stored = sum(version.read_relation_split(relation["name"], s).nnz for s in ("train", "validation", "test"))
            assert stored == relation["entries_total"]
            lines = sum(_data_lines(Path(path)) for paths in relation["files"].values() for path in paths)
            assert lines == relation["rows_read"]


def _data_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip()) - 1  # the header


def comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING_KEYS}


def has_checkpoint_after_round(dataset: DatasetDir, round_number: int):
    def ready() -> bool:
        for staging in dataset.stagings():
            try:
                saved = staging.load_resume_checkpoint()
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                continue
            if saved is not None and saved.round >= round_number:
                return True
        return False
    return ready


@pytest.fixture(scope="module")
def demo(small_demo_spec: Path, tmp_path_factory) -> tuple[Path, Path]:
    """The demo spec and an output folder shared by the module's commands, in order."""
    return small_demo_spec, tmp_path_factory.mktemp("faults-out")


@pytest.mark.slow
def test_command_faults_in_sequence(demo, tmp_path):
    """Two runs race (the second queues with --wait), the second is SIGKILLed mid-training, and the same command
    resumes it to the first's (uninterrupted) result; a run dies mid-publish and the next run finishes that
    publish; Ctrl-C mid-training."""
    spec, out = demo
    dataset = DatasetDir(out / "demo")

    # Two runs at once, the second queueing on the lock; the second is then SIGKILLed mid-training.
    # (It starts once the first holds the lock, so that the two temporary Prefect servers do not migrate the
    # shared, still empty Prefect database at the same moment: Prefect's migrations race there.)
    first = Command(spec, out, tmp_path / "first.log", "--mode", "joint", "--wait")
    first.wait_for(lambda: dataset.lock_holder.exists())
    killed = Command(spec, out, tmp_path / "killed.log", "--mode", "joint", "--wait")
    assert first.finish() == 0, first.output()
    first.assert_nothing_left()
    reference = latest(dataset)
    check_invariants(dataset, reference)
    uninterrupted = json.loads(dataset.version(reference).metrics.read_text())["metrics"]
    killed.wait_for(has_checkpoint_after_round(dataset, 3))
    killed.process.send_signal(signal.SIGKILL)
    killed.process.wait()
    killed.assert_nothing_left()
    check_invariants(dataset, reference)
    assert len(dataset.stagings()) == 1

    # The same command again: it resumes the killed run and ends where the uninterrupted run ended.
    started = time.monotonic()
    resumed = Command(spec, out, tmp_path / "resumed.log", "--mode", "joint")
    assert resumed.finish() == 0, resumed.output()
    resume_seconds = time.monotonic() - started
    resumed.assert_nothing_left()
    version = latest(dataset)
    assert version != reference and dataset.stagings() == []
    check_invariants(dataset, version)
    manifest = json.loads(dataset.version(version).manifest.read_text())
    assert manifest["resumed_from_round"] >= 3 and manifest["recovered"] == []
    assert not dataset.version(version).resume_checkpoint.exists()
    assert comparable(json.loads(dataset.version(version).metrics.read_text())["metrics"]) == comparable(uninterrupted)
    print(f"resumed run: {resume_seconds:.1f} s")

    # Killed after renaming its version into place, before `latest` moved: the next run finishes the publish.
    previous = latest(dataset)
    cut = Command(spec, out, tmp_path / "cut.log", "--mode", "joint", "--fresh",
                  environment={FAULT_ENVIRONMENT: "latest"})
    assert cut.finish() == FAULT_EXIT_CODE, cut.output()
    cut.assert_nothing_left()
    check_invariants(dataset, previous)
    renamed = versions(dataset)[-1]
    assert renamed > previous

    # Ctrl-C mid-training: exits non-zero within 10 s, its staging gone; the cut publish was finished first.
    # Many more rounds than the others, so that the run is still training when the signal lands.
    interrupted = Command(spec, out, tmp_path / "interrupted.log", "--mode", "joint", "--fresh",
                          "--rounds", "200", "--patience", "200")
    interrupted.wait_for(has_checkpoint_after_round(dataset, 1))
    os.killpg(interrupted.process.pid, signal.SIGINT)
    started = time.monotonic()
    assert interrupted.finish(timeout=30) != 0
    assert time.monotonic() - started < 10
    interrupted.assert_nothing_left()
    assert "finished publishing" in interrupted.output()
    assert dataset.stagings() == []
    check_invariants(dataset, renamed)


@pytest.mark.slow
def test_a_worker_killed_mid_round_is_recovered_and_the_run_completes(demo, tmp_path):
    spec, _ = demo
    out = tmp_path / "out"
    dataset = DatasetDir(out / "demo")
    run = Command(spec, out, tmp_path / "run.log", "--mode", "distributed")
    run.wait_for(has_checkpoint_after_round(dataset, 2))
    workers = [p for p in run.descendants.values() if _running(p) and "spawn_main" in " ".join(p.cmdline())]
    assert workers, run.output()
    os.kill(workers[0].pid, signal.SIGKILL)
    killed_at = time.monotonic()
    assert run.finish() == 0, run.output()
    run.assert_nothing_left()
    version = latest(dataset)
    check_invariants(dataset, version)
    manifest = json.loads(dataset.version(version).manifest.read_text())
    assert len(manifest["recovered"]) == 1 and manifest["recovered"][0]["round"] >= 3
    print(f"recovered run finished {time.monotonic() - killed_at:.1f} s after the kill")


@pytest.mark.parametrize("step", PUBLISH_STEPS)
def test_publish_killed_at_each_step_keeps_latest_and_the_catalog_consistent(step, tmp_path):
    dataset = DatasetDir(tmp_path / "demo")
    old = _staged_version(dataset, "v1", ["a", "b"])
    subprocess.run([sys.executable, "-c", _PUBLISH.format(staging=str(old.path), dataset=str(dataset.path), version="v1")],
                   check=True)
    new = _staged_version(dataset, "v2", ["a", "b", "c"])
    died = subprocess.run(
        [sys.executable, "-c", _PUBLISH.format(staging=str(new.path), dataset=str(dataset.path), version="v2")],
        env=os.environ | {FAULT_ENVIRONMENT: step},
    )
    assert died.returncode == FAULT_EXIT_CODE
    committed = step != "rename"
    assert latest(dataset) == ("v2" if step == "done" else "v1")
    assert (dataset.version("v2").path.is_dir()) == committed
    for name in versions(dataset):
        own = EntityCatalog.load(dataset.version(name).catalog, "user").keys
        persistent = EntityCatalog.load(dataset.catalog, "user").keys
        assert list(own[: len(persistent)]) == list(persistent[: len(own)])
    logged: list[str] = []
    with dataset_lock(dataset, log=logged.append):
        pass
    assert latest(dataset) == ("v2" if committed else "v1")
    assert list(EntityCatalog.load(dataset.catalog, "user").keys) == (["a", "b", "c"] if committed else ["a", "b"])
    assert dataset.stagings() == []
    assert ("finished publishing v2, whose run died after renaming it into place" in logged) == (
        step in ("catalog", "latest")
    )


_PUBLISH = textwrap.dedent(
    """
    from pathlib import Path
    from hyperlearn.pipeline.publish import publish
    publish(Path({staging!r}), Path({dataset!r}), {version!r}, catalog_source=Path({staging!r}) / "catalog")
    """
)


def _staged_version(dataset: DatasetDir, version: str, keys: list[str]) -> RunDir:
    """A staging folder with a catalog of `keys` and a manifest: what publish needs to move into place."""
    staging = dataset.staging(version)
    staging.path.mkdir(parents=True)
    EntityCatalog("user", keys).save(staging.catalog)
    staging.manifest.write_text(json.dumps({"version": version}))
    np.save(staging.path / "payload.npy", np.arange(3))
    return staging
