"""One run at a time per dataset: the lock on `OUT/<dataset>` a run holds from staging to publishing.

Two runs publishing into one dataset would each extend the append-only catalog from the same parent and the
last one's would win, so an earlier version's entity ids would point at other keys. The lock is an OS file lock
(`filelock`): the kernel releases it when its holder dies in any way, so a killed run never blocks the next
one, and the next one, holding the lock, knows that every staging folder it finds was left by a dead run and
removes it — all but the one its caller can resume (`keep`), which it hands back.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

import filelock

from hyperlearn.pipeline.publish import finish_interrupted_publish
from hyperlearn.rundir import DatasetDir, RunDir


class DatasetBusy(RuntimeError):
    """Another run holds the dataset's lock; the message names it (pid, host, start time)."""


@contextmanager
def dataset_lock(
    dataset: DatasetDir,
    wait: bool = False,
    log: Callable[[str], None] = print,
    keep: Callable[[RunDir], bool] = lambda staging: False,
) -> Iterator[RunDir | None]:
    """Hold the dataset's lock for the block; without `wait`, raise DatasetBusy at once when another run holds
    it. Once held, a publish a dead run left half done is finished (`finish_interrupted_publish`), and staging
    folders of dead runs are removed, except the newest one `keep` accepts (a run the
    caller resumes), which the block receives (None when there is none)."""
    dataset.path.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(dataset.lock)
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except filelock.Timeout:
        raise DatasetBusy(f"{dataset.path} is locked by another run ({_holder(dataset)}); pass --wait to queue "
                          "behind it") from None
    try:
        dataset.lock_holder.write_text(json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(), "started": datetime.now(timezone.utc).isoformat(),
        }))
        finish_interrupted_publish(dataset, log)
        kept = next((staging for staging in reversed(dataset.stagings()) if keep(staging)), None)
        for stale in dataset.stagings():
            if stale != kept:
                log(f"removing {stale.path.name}, left by a run that did not finish")
                shutil.rmtree(stale.path, ignore_errors=True)
        yield kept
    finally:
        dataset.lock_holder.unlink(missing_ok=True)
        lock.release()


def _holder(dataset: DatasetDir) -> str:
    try:
        holder = json.loads(dataset.lock_holder.read_text())
    except (OSError, ValueError):
        return "holder unknown"
    return f"pid {holder['pid']} on {holder['host']}, started {holder['started']}"
