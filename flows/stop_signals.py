"""A run that was asked to stop never publishes, even where Python lost the request.

Ctrl-C (SIGINT) and the runner's cancellation (SIGTERM) reach a run as an exception raised wherever its main
thread happens to be. Raised inside a weakref callback or a `__del__` — garbage collection at the end of a
training, say — the exception is printed as "Exception ignored" and dropped, and the run goes on to publish a
version nobody wanted any more (seen when Ctrl-C of `hyperlearn schedule` hit a run writing its outputs). The
handlers installed here remember the signal before handing it on to the handler that was there before, so
that the flow can refuse to publish at its last step.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

WATCHED = (signal.SIGINT, signal.SIGTERM)


class StopRequested(RuntimeError):
    """The run was sent SIGINT or SIGTERM, and the exception that should have stopped it was lost."""


class StopSignals:
    """The stop signals this process received while watched, in order."""

    def __init__(self) -> None:
        self.received: list[signal.Signals] = []

    def raise_if_received(self, before: str) -> None:
        """Raise StopRequested naming the first signal, if any arrived, instead of going on to `before`."""
        if self.received:
            raise StopRequested(f"{self.received[0].name} was received during the run; stopping before {before}: "
                                "the published versions stay as they were")


@contextmanager
def watching_stop_signals() -> Iterator[StopSignals]:
    """Within the block, record SIGINT and SIGTERM and pass each on to the handler installed before (Python's
    KeyboardInterrupt, Prefect's cancellation, or the default action). Off the main thread, where handlers
    cannot be installed, nothing is recorded."""
    signals = StopSignals()
    if threading.current_thread() is not threading.main_thread():
        yield signals
        return
    # None: a handler not installed from Python, which cannot be put back; SIG_IGN: the signal is not a request
    previous = {number: handler for number in WATCHED
                if (handler := signal.getsignal(number)) is not None and handler != signal.SIG_IGN}

    def record_and_pass_on(number: int, frame: FrameType | None) -> Any:
        signals.received.append(signal.Signals(number))
        handler = previous[number]
        if callable(handler):
            return handler(number, frame)
        signal.signal(number, signal.SIG_DFL)  # the default action: the signal again, unhandled
        os.kill(os.getpid(), number)
        return None

    for number in previous:
        signal.signal(number, record_and_pass_on)
    try:
        yield signals
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
