"""Real ``lightsr serve`` processes on 127.0.0.1 for the API and browser tests.

Each server is started as a user would start it (``python -m lightsr serve --port 0``), found
through the URL it prints, waited for on ``/healthz`` and stopped at teardown. Every wait is
bounded.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

TOKEN = "test-token-1234"
START_TIMEOUT_S = 120.0
TIME_LIMIT_S = 4
URL_LINE = re.compile(r"lightsr serve: (http://\S+/) ")


@dataclass
class Server:
    """A running server: its base URL (ending in ``/``), token and process."""

    url: str
    token: str | None
    process: subprocess.Popen
    log: Path

    def client(self, token: str | None = "server's", timeout: float = 60.0) -> httpx.Client:
        """An httpx client for the server; by default it sends the server's own token."""
        token = self.token if token == "server's" else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)


def start_server(log: Path, *options: str, token: str | None = None) -> Server:
    """Start ``lightsr serve`` with ``options`` and wait until it answers ``/healthz``."""
    env = {k: v for k, v in os.environ.items() if k != "LIGHTSR_TOKEN"}
    if token:
        env["LIGHTSR_TOKEN"] = token  # as documented: not on the command line
    command = [sys.executable, "-m", "lightsr", "serve", "--port", "0", "--log-level", "warning"]
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            [*command, *options], stdout=subprocess.PIPE, stderr=stderr, env=env, text=True
        )
    try:
        url = _read_url(process, log)
        _wait_healthy(url, process, log)
    except BaseException:
        _stop(process)
        raise
    return Server(url, token, process, log)


def _read_url(process: subprocess.Popen, log: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([process.stdout], [], [], left)
        if not ready:
            break
        line = process.stdout.readline()
        if not line:  # the process ended
            break
        if match := URL_LINE.search(line):
            return match.group(1)
    _stop(process)
    pytest.fail(f"lightsr serve did not start:\n{log.read_text(errors='replace')[-3000:]}")


def _wait_healthy(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}healthz", timeout=5.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"lightsr serve never answered /healthz:\n{log.read_text(errors='replace')}")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The built-in models and bicubic, with a token, 1 MP and 2 MiB limits."""
    log = tmp_path_factory.mktemp("serve") / "server.log"
    options = ("--model", "default", "--model", "real", "--model", "bicubic")
    limits = ("--max-pixels", "1000000", "--max-upload", "2", "--time-limit", "120")
    running = start_server(log, *options, *limits, token=TOKEN)
    yield running
    _stop(running.process)


@pytest.fixture(scope="module")
def queue_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Small tiles (slow jobs, many progress steps) and room for one waiting job."""
    log = tmp_path_factory.mktemp("serve-queue") / "server.log"
    running = start_server(log, "--tile", "32", "--max-waiting", "1")
    yield running
    _stop(running.process)


@pytest.fixture(scope="module")
def timed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Small tiles and a short time limit."""
    log = tmp_path_factory.mktemp("serve-timed") / "server.log"
    running = start_server(log, "--tile", "32", "--time-limit", str(TIME_LIMIT_S))
    yield running
    _stop(running.process)
