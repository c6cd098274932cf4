"""Progress without a terminal: plain lines every few seconds, nothing for short work."""

from __future__ import annotations

import time

import lightsr.progress
from lightsr.progress import LineProgress, heartbeat, progress_bar


def test_lines_when_stderr_is_not_a_terminal(capsys, monkeypatch):
    bar = progress_bar(range(4), desc="Set5 x4", unit="img")
    assert isinstance(bar, LineProgress)  # pytest's captured stderr is no terminal
    monkeypatch.setattr(lightsr.progress, "LINE_INTERVAL_S", 0.0)
    assert list(bar) == [0, 1, 2, 3]
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("Set5 x4: 1/4 img (25%), ") and lines[-1].startswith("Set5 x4: 4/4")


def test_short_work_prints_nothing(capsys):
    with progress_bar(total=3, unit="img") as bar:
        bar.update(3)
    assert capsys.readouterr().err == ""


def test_heartbeat_of_a_long_call(capsys, monkeypatch):
    monkeypatch.setattr(lightsr.progress, "LINE_INTERVAL_S", 0.5)
    with heartbeat("exporting emt x4"):
        time.sleep(2.2)
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(line.startswith("exporting emt x4: ") for line in lines)
