"""The dataset lock: a second run is told who holds it, or waits; a dead holder never blocks; stale staging goes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from hyperlearn.pipeline.lock import DatasetBusy, dataset_lock
from hyperlearn.rundir import DatasetDir


def test_a_second_run_is_refused_at_once_naming_the_holder(tmp_path):
    dataset = DatasetDir(tmp_path / "demo")
    with dataset_lock(dataset, log=lambda line: None):
        started = time.monotonic()
        with pytest.raises(DatasetBusy, match=rf"locked by another run \(pid {os.getpid()} on .*, started 20"):
            with dataset_lock(dataset, log=lambda line: None):
                pass
        assert time.monotonic() - started < 1
    with dataset_lock(dataset, log=lambda line: None):  # released on leaving
        assert not dataset.stagings()


def test_a_waiting_run_starts_when_the_holder_finishes(tmp_path):
    dataset = DatasetDir(tmp_path / "demo")
    order: list[str] = []
    with dataset_lock(dataset, log=lambda line: None):
        waiter = threading.Thread(target=lambda: _hold(dataset, order))
        waiter.start()
        time.sleep(0.3)
        order.append("first done")
    waiter.join(timeout=10)
    assert order == ["first done", "second ran"]


def _hold(dataset: DatasetDir, order: list[str]) -> None:
    with dataset_lock(dataset, wait=True, log=lambda line: None):
        order.append("second ran")


def test_a_killed_holder_releases_the_lock_and_its_staging_is_removed(tmp_path):
    dataset = DatasetDir(tmp_path / "demo")
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from hyperlearn.pipeline.lock import dataset_lock
            from hyperlearn.rundir import DatasetDir
            dataset = DatasetDir({str(dataset.path)!r})
            with dataset_lock(dataset, log=lambda line: None):
                dataset.staging("v1").path.mkdir()
                print("holding", flush=True)
                time.sleep(600)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "holding"
    with pytest.raises(DatasetBusy, match=f"pid {holder.pid}"):
        with dataset_lock(dataset, log=lambda line: None):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    removed: list[str] = []
    with dataset_lock(dataset, log=removed.append):
        assert dataset.stagings() == []
    assert removed == ["removing .staging-v1, left by a run that did not finish"]
