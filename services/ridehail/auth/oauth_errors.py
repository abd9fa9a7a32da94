"""Errors of the OAuth endpoints (token, revocation) in the form RFC 6749 section 5.2 defines.

``400 {"error": "invalid_request" | "invalid_grant" | "unsupported_grant_type" | ..., "error_description"}``,
401 ``invalid_client`` only for a failed client authentication, never cached. Routes of
:class:`OAuthRoute` answer every failure this way: an :class:`OAuthError` as it says, and any other
exception (a domain error such as 429 or 503, a database outage, a body over the size limit) first
as the app's one error handler would answer it, then re-expressed with the same status and reason
in this vocabulary, so a standard client library always finds an ``error`` to report.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

# the error code an RFC 6749 client gets for a failure the app's handler answered by status alone
ERROR_FOR_STATUS = {
    400: "invalid_request",
    401: "invalid_client",
    413: "invalid_request",
    415: "invalid_request",
    422: "invalid_request",
    429: "slow_down",  # RFC 8628's token endpoint code for "ask less often"; Retry-After says how long
    503: "temporarily_unavailable",
}
KEPT_HEADERS = ("retry-after", "www-authenticate")


class OAuthErrorOut(BaseModel):
    """An RFC 6749 section 5.2 error response."""

    error: str = Field(examples=["invalid_grant"])
    error_description: str = Field(examples=["incorrect email or password"])


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400, headers: dict[str, str] | None = None):
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return oauth_error_response(self.error, self.description, self.status, self.headers)


def safe_description(text: str) -> str:
    """``error_description`` may hold only %x20-21 / %x23-5B / %x5D-7E (RFC 6749 appendix A)."""
    cleaned = "".join(ch if 0x20 <= ord(ch) <= 0x7E and ch not in '"\\' else "?" for ch in text)
    return cleaned[:300] or "request refused"


def oauth_error_response(
    error: str, description: str, status: int = 400, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": error, "error_description": safe_description(description)}
    return JSONResponse(body, status_code=status, headers={**NO_STORE, **(headers or {})})


def _handler_for(request: Request, exc: Exception) -> Callable[..., Any] | None:
    handlers: dict[Any, Callable[..., Any]] = request.app.exception_handlers
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None


async def as_oauth_error(request: Request, exc: Exception) -> Response | None:
    """What the app's error handler answers for ``exc``, in RFC 6749's form; None if no handler takes it."""
    handler = _handler_for(request, exc)
    if handler is None:
        return None
    answered: Response = await handler(request, exc)
    status = answered.status_code
    try:
        detail = json.loads(bytes(answered.body)).get("detail")
    except (ValueError, AttributeError):
        detail = None
    description = detail if isinstance(detail, str) else "the request is malformed"
    error = ERROR_FOR_STATUS.get(status, "server_error" if status >= 500 else "invalid_request")
    headers = {name: answered.headers[name] for name in KEPT_HEADERS if name in answered.headers}
    return oauth_error_response(error, description, status, headers)


class OAuthRoute(APIRoute):
    """A route whose every error answer is an RFC 6749 error response."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except OAuthError as exc:
                return exc.response()
            except Exception as exc:
                translated = await as_oauth_error(request, exc)
                if translated is None:
                    raise
                return translated

        return answer


def documented(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """An OpenAPI ``responses`` entry for an OAuth error."""
    out: dict[str, Any] = {"model": OAuthErrorOut, "description": description}
    if headers:
        out["headers"] = headers
    return out
