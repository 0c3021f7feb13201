"""The command's own temporary Prefect server: it never outlives the command, however the command ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

from hyperlearn.flows.temporary_server import temporary_api

# A command that starts the temporary server, says where it is, and waits to be killed.
_COMMAND = textwrap.dedent(
    """
    import json, os, time
    from hyperlearn.flows.temporary_server import temporary_api
    with temporary_api(log=lambda line: None) as wait_for_server:
        wait_for_server()
        url = os.environ["PREFECT_API_URL"]
        print(json.dumps({"url": url}), flush=True)
        time.sleep(600)
    """
)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def _gone_within(url: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _answers(url):
            return True
        time.sleep(0.2)
    return False


def _start_command() -> tuple[subprocess.Popen, str]:
    environment = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    command = subprocess.Popen(
        [sys.executable, "-c", _COMMAND], stdout=subprocess.PIPE, text=True, env=environment, start_new_session=True
    )
    url = json.loads(command.stdout.readline())["url"]
    assert _answers(url)
    return command, url


def test_a_set_api_address_is_used_as_it_is(monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    with temporary_api(log=lambda line: None) as wait_for_server:
        wait_for_server()
        assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"


@pytest.mark.slow
def test_the_server_dies_with_a_killed_command():
    command, url = _start_command()
    command.kill()  # SIGKILL: no atexit, no finally
    command.wait()
    assert _gone_within(url, 10)


@pytest.mark.slow
def test_ctrl_c_stops_the_command_and_its_server_promptly():
    command, url = _start_command()
    started = time.monotonic()
    os.killpg(command.pid, signal.SIGINT)  # what a terminal sends to the foreground process group
    assert command.wait(timeout=10) != 0
    assert time.monotonic() - started < 10
    assert _gone_within(url, 5)
