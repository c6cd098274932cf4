"""Exceptions that lightsr raises for problems a user can fix, and the exit codes.

Every error here carries a one-line, human-readable message. The CLI prints that line to
stderr and exits with :attr:`LightSRError.exit_code`; it never shows a traceback for them.

Exit codes of every ``lightsr`` command (also in ``lightsr --help`` and the README):

==== =====================================================================================
0    success (a folder run where ``--skip-existing`` skipped everything included)
1    a batch ran but some inputs failed; each failure is one line on stderr
2    nothing was done: bad arguments or option values, unreadable or invalid input
     (image, checkpoint, config), an existing output without ``--overwrite``
3    the Ray cluster failed (``lightsr upscale --ray``)
4    an unexpected internal error (a bug: please report it; ``--verbose`` shows the
     traceback)
130  interrupted (Ctrl-C)
==== =====================================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_ERROR = 2
EXIT_CLUSTER = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\
exit codes:
  0    success (also when --skip-existing left nothing to do)
  1    a batch ran but some inputs failed (each one named on stderr)
  2    nothing done: bad arguments, invalid input or checkpoint, existing output
       without --overwrite (one line on stderr)
  3    the Ray cluster failed (upscale --ray)
  4    internal error (a bug; --verbose shows the traceback)
  130  interrupted
"""


class LightSRError(Exception):
    """Base class of every user-facing lightsr error."""

    exit_code: int = EXIT_ERROR


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
