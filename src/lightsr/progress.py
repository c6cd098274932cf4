"""Progress of long steps: a tqdm bar on a terminal, a plain line every few seconds otherwise.

A bar redrawn with carriage returns is noise in a log file or a CI job, and nothing at all
for minutes looks like a hang. :func:`progress_bar` picks one or the other for stderr;
:func:`heartbeat` covers a single long call that reports no steps (an ONNX export).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm import tqdm

# Seconds between two progress lines when stderr is not a terminal.
LINE_INTERVAL_S = 5.0


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    leave: bool = True,
) -> Any:
    """A tqdm bar on stderr when it is a terminal, else a :class:`LineProgress`.

    Both are iterables over ``iterable`` (when given) with ``update``, ``reset``, ``close``
    and ``n``; a disabled one shows nothing.
    """
    if iterable is not None and total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if enabled and not sys.stderr.isatty():
        return LineProgress(iterable, total, desc, unit)
    return tqdm(
        iterable,
        total=total,
        desc=desc or None,
        unit=unit,
        file=sys.stderr,
        leave=leave,
        disable=not enabled,
        dynamic_ncols=True,
    )


class LineProgress:
    """tqdm's counting interface, printing ``desc: 3/10 img (30%), 12 s`` to stderr at most
    every :data:`LINE_INTERVAL_S` seconds, and a last line on close if the count moved since
    the last one."""

    def __init__(self, iterable: Iterable | None, total: int | None, desc: str, unit: str) -> None:
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = 0
        self.start = self.last = time.monotonic()
        self.printed_n: int | None = None  # the count of the last line printed

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= LINE_INTERVAL_S:
            self.last = now
            self._print(now)

    def reset(self, total: int | None = None) -> None:
        self.n = 0
        if total is not None:
            self.total = total

    def close(self) -> None:
        if self.printed_n is not None and self.printed_n != self.n:
            self._print(time.monotonic())

    def _print(self, now: float) -> None:
        count = f"{self.n}/{self.total}" if self.total else str(self.n)
        percent = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        prefix = f"{self.desc}: " if self.desc else ""
        print(f"{prefix}{count} {self.unit}{percent}, {now - self.start:.0f} s", file=sys.stderr)
        self.printed_n = self.n


@contextlib.contextmanager
def heartbeat(desc: str, enabled: bool = True) -> Iterator[None]:
    """Show that a long call without steps is alive: elapsed seconds on a terminal, a line
    every :data:`LINE_INTERVAL_S` seconds otherwise."""
    if not enabled:
        yield
        return
    bar = progress_bar(desc=desc, unit="s", leave=False)
    done = threading.Event()

    def tick() -> None:
        while not done.wait(1.0):
            bar.update(1)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        bar.close()
