"""Errors the server answers with: an HTTP status, a stable code and a one-line message."""

from __future__ import annotations

from collections.abc import Mapping


class ServeError(Exception):
    """A request that failed for a reason the client should know.

    Args:
        status: HTTP status code (4xx: the request, 5xx: the server).
        code: short machine-readable name, e.g. ``"too_many_pixels"``.
        message: one human-readable line.
        headers: extra response headers (``WWW-Authenticate``, ``Retry-After``).
    """

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def to_dict(self) -> dict[str, object]:
        """The JSON error body: ``{"error": {"status", "code", "message"}}``."""
        return {"error": {"status": self.status, "code": self.code, "message": self.message}}
