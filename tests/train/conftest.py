"""Fixtures of the training tests: tiny data sets and configs for a tiny stand-in network."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tiny_net  # noqa: F401  (registers the stand-in network)
