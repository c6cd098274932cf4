"""Keeping third-party chatter (libpng, OpenCV, torch warnings) away from the user.

lightsr reports every problem itself, in one line. Libraries underneath print their own
warnings first (``libpng warning: iCCP: known incorrect sRGB profile``, torch's
``UserWarning`` s), which only confuse that line. The ``lightsr`` command silences them
unless ``--verbose`` is given; the Python API leaves them alone unless
:func:`set_verbose` is called with ``False``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings
from collections.abc import Iterator

_verbose = True


def set_verbose(verbose: bool) -> None:
    """Show (``True``) or hide third-party warnings for the rest of the process."""
    global _verbose
    _verbose = verbose
    if not verbose:
        warnings.filterwarnings("ignore")


def is_verbose() -> bool:
    return _verbose


# File descriptor 2 is one per process: threads that read images at the same time share
# one redirection (the first one in saves the real stderr, the last one out restores it).
# Each saving and restoring its own would leave /dev/null in place when they interleave.
_redirect_lock = threading.Lock()
_redirect_depth = 0
_saved_stderr: int | None = None


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Send what C libraries write to file descriptor 2 to ``/dev/null`` inside the block
    (unless verbose). libpng and libtiff print there directly, past Python's ``sys.stderr``.
    Safe to enter from several threads at once.
    """
    if _verbose:
        yield
        return
    global _redirect_depth, _saved_stderr
    with _redirect_lock:
        if _redirect_depth == 0:
            sys.stderr.flush()
            _saved_stderr = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        _redirect_depth += 1
    try:
        yield
    finally:
        with _redirect_lock:
            _redirect_depth -= 1
            if _redirect_depth == 0 and _saved_stderr is not None:
                os.dup2(_saved_stderr, 2)
                os.close(_saved_stderr)
                _saved_stderr = None
