"""``lightsr serve`` options: cheap --help, refusals before anything is served."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

HEAVY = ("torch", "numpy", "cv2", "fastapi", "uvicorn", "starlette")


def lightsr(*args: str, env_token: str | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin"} | ({"LIGHTSR_TOKEN": env_token} if env_token else {})
    return subprocess.run(
        [sys.executable, "-m", "lightsr", "serve", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_help_imports_no_server_or_engine_module():
    code = f"""
import contextlib, io, json, sys
from lightsr.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
    main(["serve", "--help"])
print(json.dumps([sorted(m for m in {HEAVY!r} if m in sys.modules), "--token" in out.getvalue()]))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == [[], True]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "0.0.0.0"], "give a bearer token"),
        (["--host", "192.0.2.1"], "give a bearer token"),
        (["--jobs", "0"], "--jobs must be at least 1"),
        (["--port", "70000"], "--port must be at most 65535"),
        (["--time-limit", "0"], "--time-limit must be positive"),
    ],
)
def test_refused_options_end_in_one_line(args, message):
    result = lightsr(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert result.stderr.startswith("lightsr serve: error: ")


def test_busy_port_ends_in_one_line():
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = lightsr("--port", str(port))
    assert result.returncode == 2
    assert (
        result.stderr == f"lightsr serve: error: cannot listen on 127.0.0.1:{port}: "
        "Address already in use\n"
    )


def test_unknown_model_ends_in_one_line():
    result = lightsr("--port", "0", "--model", "no-such-model")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no-such-model" in result.stderr
