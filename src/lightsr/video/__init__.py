"""Video upscaling with PyAV (the ``lightsr[video]`` extra): see :mod:`lightsr.video.pipeline`.

This package's top level imports neither PyAV nor torch; :func:`upscale_video` and
:func:`transcode` load them on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from lightsr.video.formats import CODECS, VIDEO_SUFFIXES, is_video

_EXPORTS = ("upscale_video", "transcode", "VideoOptions", "VideoReport")
__all__ = ["CODECS", "VIDEO_SUFFIXES", "is_video", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module("lightsr.video.pipeline"), name)
    raise AttributeError(f"module 'lightsr.video' has no attribute {name!r}")
