"""The outcomes a request can end in besides success, as exceptions the domain and the stores raise.

Each carries the reason a caller is told. Services never build HTTP errors themselves: every app
installs :func:`ridehail.common.http_errors.install_error_handlers`, which maps these (and
database failures) to one JSON shape, ``{"detail": reason}``, with the right status code.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base class; ``status`` is the HTTP status an edge answers with."""

    status = 400

    def __init__(self, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.headers = headers or {}


class InvalidInput(DomainError):
    """Well-formed but not acceptable: outside the service area, a bad cursor, no route."""

    status = 422


class Unauthenticated(DomainError):
    """No credentials, or credentials that do not verify (401 with a Bearer challenge)."""

    status = 401

    def __init__(self, reason: str, error: str | None = "invalid_token") -> None:
        challenge = "Bearer" if error is None else f'Bearer error="{error}", error_description="{reason}"'
        super().__init__(reason, {"WWW-Authenticate": challenge})


class Forbidden(DomainError):
    status = 403


class NotFound(DomainError):
    status = 404


class Conflict(DomainError):
    """The request contradicts the current state (a used quote, a ride that can no longer be cancelled)."""

    status = 409


class Gone(DomainError):
    """It existed but is no longer valid (an expired quote)."""

    status = 410


class PayloadTooLarge(DomainError):
    status = 413


class TooManyRequests(DomainError):
    status = 429

    def __init__(self, reason: str, retry_after_s: float) -> None:
        super().__init__(reason, {"Retry-After": str(max(1, int(retry_after_s + 0.999)))})


class Unavailable(DomainError):
    """A dependency (the database, the broker) is away: retry shortly."""

    status = 503

    def __init__(self, reason: str, retry_after_s: int = 1) -> None:
        super().__init__(reason, {"Retry-After": str(retry_after_s)})
