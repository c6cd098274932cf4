"""Fixtures of the hostile-input tests."""

from __future__ import annotations

import pytest

import lightsr.api
from lightsr.cli import main
from tests.tiny_sr import tiny_model


@pytest.fixture
def tiny(monkeypatch):
    """Every model name (and the built-in default) resolves to the tiny test network."""
    monkeypatch.setattr(lightsr.api, "_load_network", lambda model, scale, weights: tiny_model())


@pytest.fixture
def cli(capsys):
    """Run ``lightsr ARGS`` in-process: returns (exit code, stdout, stderr lines)."""

    def run(*args: object) -> tuple[int, str, list[str]]:
        try:
            code = main([str(arg) for arg in args])
        except SystemExit as exc:  # argparse's own refusals
            code = exc.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err.strip().splitlines()

    return run
