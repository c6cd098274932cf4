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


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Send what C libraries write to file descriptor 2 to ``/dev/null`` inside the block
    (unless verbose). libpng and libtiff print there directly, past Python's ``sys.stderr``.
    """
    if _verbose:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
