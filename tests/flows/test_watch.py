"""The input watcher of `hyperlearn schedule --on-change`: one event per change, none without one."""

from __future__ import annotations

import threading
from pathlib import Path

from hyperlearn.flows.watch import InputWatcher

SPEC = """\
name: tiny
modalities: [{name: user}, {name: item}]
relations:
- name: rating
  modalities: {user: user_id, item: item_id}
  value: rating
  source: {path: "ratings/*.csv", format: csv}
"""


def _tiny(root: Path) -> Path:
    (root / "ratings").mkdir()
    (root / "ratings" / "a.csv").write_text("user_id,item_id,rating\nu1,i1,4\n")
    (root / "tiny.yaml").write_text(SPEC)
    return root / "tiny.yaml"


def test_emits_once_per_change_and_never_without_one(tmp_path: Path):
    spec = _tiny(tmp_path)
    emitted: list[tuple[str, str, str]] = []
    watcher = InputWatcher("tiny", spec, emit=lambda *event: emitted.append(event), log=lambda message: None)
    assert not watcher.check()
    (tmp_path / "ratings" / "b.csv").write_text("user_id,item_id,rating\nu2,i1,3\n")
    assert watcher.check()
    assert not watcher.check()
    [(dataset, fingerprint, reason)] = emitted
    assert (dataset, fingerprint, reason) == ("tiny", watcher.fingerprint, "inputs changed")


def test_inputs_unreadable_for_a_while_are_waited_out(tmp_path: Path):
    spec = _tiny(tmp_path)
    emitted: list[tuple[str, str, str]] = []
    logged: list[str] = []
    watcher = InputWatcher("tiny", spec, emit=lambda *event: emitted.append(event), log=logged.append)
    baseline = watcher.fingerprint
    spec.write_text("name: [")  # half written
    assert not watcher.check()
    assert watcher.fingerprint == baseline
    assert "cannot be read, waiting for them" in logged[-1] and "tiny.yaml" in logged[-1]
    spec.write_text(SPEC + "training: {rank: 4}\n")
    assert watcher.check()
    assert [reason for _, _, reason in emitted] == ["inputs changed"]


def test_watch_polls_until_stopped(tmp_path: Path):
    spec = _tiny(tmp_path)
    emitted: list[tuple[str, str, str]] = []
    changed = threading.Event()

    def emit(*event: str) -> None:
        emitted.append(event)
        changed.set()

    watcher = InputWatcher("tiny", spec, emit=emit, log=lambda message: None)
    stop = threading.Event()
    polling = threading.Thread(target=watcher.watch, args=(0.05, stop))
    polling.start()
    (tmp_path / "ratings" / "b.csv").write_text("user_id,item_id,rating\nu2,i1,3\n")
    assert changed.wait(10)
    stop.set()
    polling.join(10)
    assert not polling.is_alive()
    assert len(emitted) == 1
