import sys

import pytest

from lightsr.runtime import DISABLE_VARIABLE, retain_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_retain_freed_memory_takes_effect_on_glibc(monkeypatch):
    monkeypatch.delenv(DISABLE_VARIABLE, raising=False)
    assert retain_freed_memory() is True


def test_retain_freed_memory_can_be_switched_off(monkeypatch):
    monkeypatch.setenv(DISABLE_VARIABLE, "0")
    assert retain_freed_memory() is False
