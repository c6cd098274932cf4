"""Locations lightsr reads from and writes to."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


def shared_dir() -> Path:
    """The shared data folder (benchmark sets, training images, reference files).

    ``$LIGHTSR_SHARED`` when set; otherwise the first of ``shared/`` and ``../shared``
    (relative to the current directory) that exists, else ``shared/``. The installed
    package never assumes where a source checkout lies.
    """
    env = os.environ.get("LIGHTSR_SHARED")
    if env:
        return Path(env)
    candidates = [Path("shared"), Path("..", "shared")]
    return next((path.resolve() for path in candidates if path.is_dir()), candidates[0].resolve())


def cache_dir() -> Path:
    """Where downloaded weights and exported models go: ``$LIGHTSR_CACHE`` or the user cache."""
    env = os.environ.get("LIGHTSR_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lightsr"


def package_weights_dir() -> Path:
    """The built-in default weights shipped inside the package."""
    return Path(__file__).resolve().parent / "weights"


@contextlib.contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """A new empty temporary file beside ``path``, moved onto ``path`` if the block succeeds.

    Write the file's content to the yielded path inside the ``with`` block. Readers see the
    old file or the complete new one, never a partial one: if the block raises, or the
    final move fails, the temporary (``.<name>.<random>.tmp``) is removed and the error
    propagates. The folder must exist. The file is created with mode 0o666 (unlike
    ``mkstemp``'s 0o600), so the umask decides its permissions as for any new file.
    """
    temporary = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def check_output_path(path: str | os.PathLike, overwrite: bool, suffix: str | None = None) -> Path:
    """Check, before any work, that a command may write its output file ``path``.

    Every ``lightsr`` command that writes follows the same rule: an existing output is
    replaced only with ``--overwrite``.

    Args:
        suffix: the extension the output must have (``".safetensors"``), if any.

    Raises:
        UsageError: ``path`` has another extension, is a folder, or exists and
            ``overwrite`` is false.
    """
    from lightsr.errors import UsageError

    path = Path(path)
    if suffix is not None and path.suffix.lower() != suffix:
        raise UsageError(f"{path}: output must end in {suffix}")
    if path.is_dir():
        raise UsageError(f"{path}: is a folder; give an output file name")
    if path.exists() and not overwrite:
        raise UsageError(f"{path}: output exists; use --overwrite to replace it")
    return path
