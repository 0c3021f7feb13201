"""A temporary Prefect server that belongs to one `hyperlearn` command, for runs with no PREFECT_API_URL.

Prefect would start one itself, from inside the first API call: it imports its whole server package into this
process only to launch a subprocess (seconds of imports), launches it in this process's group (so Ctrl-C kills
it while the run still wants to report its final state), and a SIGKILL of this process leaves it listening.
This one is launched before the flow's imports, from the command's main thread, so it starts while torch and
Dask load; it runs in its own session (Ctrl-C reaches only the run, which then reports and stops it); on Linux
the kernel sends it SIGTERM when this process dies in any way (PR_SET_PDEATHSIG); and it is stopped on exit.
It serves the same application Prefect's own temporary server serves, without the UI or background services.
"""

from __future__ import annotations

import atexit
import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

_PR_SET_PDEATHSIG = 1


class ServerError(RuntimeError):
    """The temporary server did not come up; the message says what it printed."""


class TemporaryServer:
    """A Prefect API server subprocess on a free loopback port."""

    def __init__(self, process: subprocess.Popen, port: int) -> None:
        self.process = process
        self.port = port

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def wait_until_healthy(self, timeout: float) -> None:
        """Block until the API answers its health check; raise ServerError if it exits or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"the temporary Prefect server exited with code {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise ServerError(f"the temporary Prefect server did not answer on {self.api_url} within {timeout:.0f} s")

    def stop(self) -> None:
        """Terminate the server (kill it after 5 s) and reap it; safe to call more than once."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def launch_server() -> TemporaryServer:
    """Start the server process (without waiting for it to answer); it is stopped at interpreter exit."""
    port = _free_port()
    prefect_dir = Path(importlib.util.find_spec("prefect").origin).parent
    environment = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    environment.pop("PREFECT_API_URL", None)
    process = subprocess.Popen(
        [
            sys.executable, "-m", "uvicorn", "--app-dir", str(prefect_dir.parent), "--factory",
            "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "error", "--lifespan", "on",
        ],
        env=environment,
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )
    server = TemporaryServer(process, port)
    atexit.register(server.stop)
    return server


@contextmanager
def temporary_api(log: Callable[[str], None] = print, timeout: float = 90.0) -> Iterator[Callable[[], None]]:
    """Within the block, PREFECT_API_URL points at a temporary server launched on entry (unless one is set
    already); the block gets a function that waits until the server answers — call it before the first flow
    run. On leaving, the server is stopped and the variable restored."""
    if os.environ.get("PREFECT_API_URL"):
        yield lambda: None
        return
    server = launch_server()
    log(f"started a temporary Prefect server on {server.api_url} (it stops with this command)")
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        yield lambda: server.wait_until_healthy(timeout)
    finally:
        _deliver_queued_logs_and_events()
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


def _deliver_queued_logs_and_events() -> None:
    """Prefect sends run logs and events from background workers in batches; send what they hold while the
    server still answers, instead of at interpreter exit when it is gone."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=5)


def _free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: have the kernel send SIGTERM when the parent dies (Linux prctl)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
