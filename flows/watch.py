"""Watching a dataset's inputs from the serving process, for `hyperlearn schedule --on-change`.

Every `poll` seconds the watcher takes the inputs' content fingerprint (`hyperlearn.pipeline.fingerprint`) and,
when it differs from the last one it saw, emits `hyperlearn.dataset.changed`, which the served deployment's
trigger turns into a run. The first fingerprint, taken when serving starts, is the baseline: what changed while
nothing was serving is not noticed. Inputs that cannot be read for now (a spec half edited, a glob that matches
nothing yet) are logged and waited out, the baseline kept. Files unchanged in size and modification time
are not read again between polls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from hyperlearn.flows.events import emit_dataset_changed
from hyperlearn.pipeline.fingerprint import HashCache, input_fingerprint
from hyperlearn.pipeline.spec import load_spec

Emit = Callable[[str, str, str], None]


class InputWatcher:
    """Polls one spec's inputs and emits `hyperlearn.dataset.changed` for `dataset` when they change."""

    def __init__(
        self,
        dataset: str,
        spec_path: str | Path,
        data_root: str | Path | None = None,
        allow_roots: Sequence[str | Path] = (),
        emit: Emit = emit_dataset_changed,
        log: Callable[[str], None] = lambda message: print(message, flush=True),
    ) -> None:
        self.dataset = dataset
        self.spec_path = Path(spec_path)
        self.data_root = data_root
        self.allow_roots = list(allow_roots)
        self.emit = emit
        self.log = log
        self.hashes: HashCache = {}
        self.fingerprint = self._current()

    def _current(self) -> str | None:
        try:
            spec = load_spec(
                self.spec_path,
                None if self.data_root is None else Path(self.data_root),
                allow_roots=[Path(root) for root in self.allow_roots],
            )
            return input_fingerprint(spec, cache=self.hashes).digest
        except ValueError as error:  # SpecError, SourceError: unreadable for now
            self.log(f"the inputs of {self.dataset!r} cannot be read, waiting for them: {error}")
            return None

    def check(self) -> bool:
        """Take the fingerprint again; emit and return True when it changed from the last readable one."""
        current = self._current()
        if current is None or current == self.fingerprint:
            return False
        reason = "first readable inputs" if self.fingerprint is None else "inputs changed"
        self.fingerprint = current
        self.emit(self.dataset, current, reason)
        self.log(f"{reason} for {self.dataset!r} (fingerprint {current[:12]}): emitted a retraining event")
        return True

    def watch(self, poll: float, stop: threading.Event) -> None:
        """Check every `poll` seconds until `stop` is set."""
        while not stop.wait(poll):
            self.check()
