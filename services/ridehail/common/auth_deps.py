"""FastAPI dependencies that turn a ``Authorization: Bearer`` header into a verified Principal.

Usage::

    verifier = TokenVerifier(settings.auth_url + "/.well-known/jwks.json")
    RiderOrAdmin = Annotated[Principal, Depends(require_principal(lambda: verifier, {"rider", "admin"}))]

    @router.get("/api/rides")
    async def rides(principal: RiderOrAdmin) -> ...

Missing or invalid tokens get 401 with ``WWW-Authenticate: Bearer`` (RFC 6750) and a reason;
a valid token with the wrong role gets 403 (domain errors: the app's one error handler answers
them). The token itself is never logged or echoed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request

from ridehail.common.auth_tokens import InvalidToken, Principal, TokenVerifier
from ridehail.domain.errors import Forbidden, Unauthenticated

VerifierGetter = Callable[[], TokenVerifier]
PrincipalDependency = Callable[[Request], Awaitable[Principal]]


def bearer_token(authorization: str | None) -> str | None:
    """The token from an ``Authorization: Bearer <token>`` header value, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def authenticate(
    request: Request,
    verifier: TokenVerifier,
    roles: frozenset[str] | set[str] | None = None,
    forbidden_reason: str = "role {role!r} may not do this",
) -> Principal:
    """The verified caller of ``request``; :class:`Unauthenticated` (401) or :class:`Forbidden` (403)."""
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise Unauthenticated("missing bearer token", error=None)
    try:
        principal = await verifier.verify(token, expected_type="access")
    except InvalidToken as exc:
        raise Unauthenticated(exc.reason) from None
    if roles is not None and principal.role not in roles:
        raise Forbidden(forbidden_reason.format(role=principal.role))
    request.state.principal = principal
    return principal


def require_principal(verifier_getter: VerifierGetter, roles: set[str] | None = None) -> PrincipalDependency:
    """A dependency returning the caller's Principal; 401 if unauthenticated, 403 if the role is not in roles."""
    allowed = frozenset(roles) if roles is not None else None

    async def dependency(request: Request) -> Principal:
        return await authenticate(request, verifier_getter(), allowed)

    return dependency
