"""Silencing native stderr: reading images from several threads at once must leave the
process's stderr in place afterwards (lightsr train reads its data in a thread pool)."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from lightsr import quiet


@pytest.fixture
def not_verbose():
    previous = quiet.is_verbose()
    quiet._verbose = False
    yield
    quiet._verbose = previous


def _hold(seconds: float) -> None:
    with quiet.quiet_native_stderr():
        time.sleep(seconds)


def test_overlapping_threads_restore_stderr(not_verbose):
    before = os.fstat(2)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(_hold, [0.01 * (i % 4) for i in range(32)]))
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)


def test_inside_the_block_native_stderr_is_devnull(not_verbose):
    devnull = os.stat(os.devnull)
    with quiet.quiet_native_stderr():
        inside = os.fstat(2)
        with quiet.quiet_native_stderr():  # nested: still silenced, restored only once
            assert os.fstat(2).st_ino == inside.st_ino
        assert os.fstat(2).st_ino == inside.st_ino
    assert (inside.st_dev, inside.st_ino) == (devnull.st_dev, devnull.st_ino)
    assert os.fstat(2).st_ino != devnull.st_ino
