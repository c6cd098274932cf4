"""Shared fixtures. Tests read real data from ``../shared`` (or ``$LIGHTSR_SHARED``).

Under CI (``CI=true``) a missing shared file is a failure, never a skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
