"""The stop signals a run records: also the ones whose KeyboardInterrupt Python drops inside a weakref callback."""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import weakref
from collections.abc import Iterator

import pytest

from hyperlearn.flows.stop_signals import StopRequested, watching_stop_signals


@pytest.fixture(autouse=True)
def python_s_sigint_handler() -> Iterator[None]:
    """Python's own KeyboardInterrupt handler, whatever this process inherited (a shell's background job
    starts with SIGINT ignored, and Python then leaves it ignored)."""
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, inherited)


class _Collected:
    """An object whose collection runs a weakref callback, as garbage collection at a run's end does."""


def _sigint_during_a_weakref_callback() -> None:
    thing = _Collected()
    weakref.finalize(thing, os.kill, os.getpid(), signal.SIGINT)
    del thing
    gc.collect()


def test_a_sigint_whose_keyboard_interrupt_python_drops_still_stops_the_run_before_publishing(
    monkeypatch: pytest.MonkeyPatch,
):
    dropped: list[type[BaseException]] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: dropped.append(unraisable.exc_type))
    with watching_stop_signals() as stop_signals:
        _sigint_during_a_weakref_callback()
        assert dropped == [KeyboardInterrupt]  # "Exception ignored in …": the run would have gone on
        with pytest.raises(StopRequested, match="SIGINT was received during the run; stopping before publishing"):
            stop_signals.raise_if_received("publishing")


def test_a_sigint_outside_callbacks_still_raises_keyboard_interrupt_and_the_handler_is_put_back():
    before = signal.getsignal(signal.SIGINT)
    with watching_stop_signals() as stop_signals:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # Python runs the handler right after the call returns
    assert stop_signals.received == [signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is before


def test_a_sigterm_reaches_the_handler_installed_before():
    seen: list[int] = []
    before = signal.signal(signal.SIGTERM, lambda number, frame: seen.append(number))
    try:
        with watching_stop_signals() as stop_signals:
            os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [signal.SIGTERM]
        assert stop_signals.received == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, before)


def test_no_signal_no_stop_and_off_the_main_thread_nothing_is_installed():
    with watching_stop_signals() as stop_signals:
        stop_signals.raise_if_received("publishing")
    handlers: list[object] = []

    def in_a_thread() -> None:
        with watching_stop_signals():
            handlers.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert handlers == [signal.getsignal(signal.SIGINT)]


def test_an_ignored_sigint_stays_ignored():
    """A process started with SIGINT ignored (nohup, a background job) is not made interruptible by the run."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with watching_stop_signals() as stop_signals:
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGINT)
        stop_signals.raise_if_received("publishing")
