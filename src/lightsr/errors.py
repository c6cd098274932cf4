"""Exceptions that lightsr raises for problems a user can fix.

Every error here carries a one-line, human-readable message. The CLI prints that line to
stderr and exits with :attr:`LightSRError.exit_code`; it never shows a traceback for them.
"""

from __future__ import annotations


class LightSRError(Exception):
    """Base class of every user-facing lightsr error."""

    exit_code: int = 2


class UsageError(LightSRError):
    """Invalid arguments or options (bad scale, missing folder, conflicting flags)."""


class ImageError(LightSRError):
    """An image could not be read, decoded, processed or written."""


class CheckpointError(LightSRError):
    """A checkpoint could not be read or matched to a known network."""


class ConfigError(LightSRError):
    """A training or benchmark configuration is invalid."""


class DownloadError(LightSRError):
    """A weights file could not be fetched or failed verification."""


class ExportError(LightSRError):
    """A network could not be exported to ONNX, or its export failed verification."""


class VideoError(ImageError):
    """A video could not be read, decoded, converted or written."""
