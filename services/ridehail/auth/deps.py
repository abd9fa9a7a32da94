"""What every auth route needs from a request: the process state, the caller's address and the
service's public base URL (both believing forwarded headers only from trusted proxies), and the
principal of a bearer token."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from ridehail.auth.state import AuthState
from ridehail.common.auth_deps import require_principal
from ridehail.common.auth_tokens import Principal
from ridehail.domain.errors import Unavailable

# host[:port] as a URL may hold it: a name or IPv4 address, or a bracketed IPv6 address
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")


def get_state(request: Request) -> AuthState:
    state: AuthState | None = getattr(request.app.state, "auth", None)
    if state is None:  # still waiting for the database at start-up
        raise Unavailable("database unavailable")
    return state


State = Annotated[AuthState, Depends(get_state)]


def _from_proxy(request: Request, state: AuthState) -> bool:
    return (request.client.host if request.client else "unknown") in state.trusted_proxies


def client_address(request: Request, state: AuthState) -> str:
    """The caller's address; X-Forwarded-For is believed only from configured trusted proxies."""
    peer = request.client.host if request.client else "unknown"
    if peer not in state.trusted_proxies:
        return peer
    hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if hop not in state.trusted_proxies:
            return hop
    return peer


def _first(request: Request, header: str) -> str:
    return request.headers.get(header, "").split(",", 1)[0].strip()


def public_base_url(request: Request, state: AuthState) -> str:
    """The base URL the caller reached this service at (for absolute URLs in the metadata).

    ``X-Forwarded-Host`` / ``X-Forwarded-Proto`` count only from a trusted proxy; a malformed host
    falls back to the address the server listens on."""
    scheme, host = request.url.scheme, request.headers.get("host", "")
    if _from_proxy(request, state):
        forwarded_host, forwarded_proto = _first(request, "x-forwarded-host"), _first(request, "x-forwarded-proto")
        if forwarded_host and _HOST.fullmatch(forwarded_host):
            host = forwarded_host
            scheme = forwarded_proto.lower() if forwarded_proto.lower() in ("http", "https") else scheme
    if not _HOST.fullmatch(host):
        address, port = request.scope.get("server") or ("127.0.0.1", 80)
        host = f"[{address}]:{port}" if ":" in str(address) else f"{address}:{port}"
    return f"{scheme}://{host}"


# declares the bearer scheme in OpenAPI (the "Authorize" button in /docs); verification is ours
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/auth/token", auto_error=False)
DeclaredBearer = Annotated[str | None, Depends(oauth2_scheme)]


def _verifier(request: Request) -> Any:
    return get_state(request).verifier


async def current_principal(request: Request, _: DeclaredBearer) -> Principal:
    """Any valid access token."""
    return await require_principal(lambda: _verifier(request))(request)


async def admin_principal(request: Request, _: DeclaredBearer) -> Principal:
    """A valid access token with role admin."""
    return await require_principal(lambda: _verifier(request), {"admin"})(request)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
AdminPrincipal = Annotated[Principal, Depends(admin_principal)]
