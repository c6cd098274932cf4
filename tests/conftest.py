"""Shared fixtures. Tests read real data from ``$LIGHTSR_SHARED``, by default ``../shared``
beside the repository root (set here, before any test runs, so that the library and
subprocesses started by tests find the same folder from any working directory).

Under CI (``CI=true``) a missing shared file is a failure, never a skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("LIGHTSR_SHARED", str(Path(__file__).resolve().parents[2] / "shared"))

from lightsr.paths import shared_dir

SHARED = shared_dir()


def shared_file(relative: str) -> Path:
    """Path of a file under the shared folder; skip locally, fail under CI, if it is missing."""
    path = SHARED / relative
    if not path.exists():
        message = f"shared file missing: {path}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def shared():
    """The ``shared_file`` helper as a fixture."""
    return shared_file
