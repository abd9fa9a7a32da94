"""FastAPI dependencies that turn a ``Authorization: Bearer`` header into a verified Principal.

Usage::

    verifier = TokenVerifier(settings.auth_url + "/.well-known/jwks.json")
    RiderOrAdmin = Annotated[Principal, Depends(require_principal(lambda: verifier, {"rider", "admin"}))]

    @router.get("/api/rides")
    async def rides(principal: RiderOrAdmin) -> ...

Missing or invalid tokens get 401 with ``WWW-Authenticate: Bearer`` (RFC 6750) and a reason;
a valid token with the wrong role gets 403. The token itself is never logged or echoed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request, status

from ridehail.common.auth_tokens import InvalidToken, Principal, TokenVerifier

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


def unauthorized(reason: str, error: str = "invalid_token") -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=reason,
        headers={"WWW-Authenticate": f'Bearer error="{error}", error_description="{reason}"'},
    )


def forbidden(reason: str) -> HTTPException:
    return HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=reason)


def require_principal(verifier_getter: VerifierGetter, roles: set[str] | None = None) -> PrincipalDependency:
    """A dependency returning the caller's Principal; 401 if unauthenticated, 403 if the role is not in roles."""
    allowed = frozenset(roles) if roles is not None else None

    async def dependency(request: Request) -> Principal:
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail="missing bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            principal = await verifier_getter().verify(token, expected_type="access")
        except InvalidToken as exc:
            raise unauthorized(exc.reason) from None
        if allowed is not None and principal.role not in allowed:
            raise forbidden(f"role {principal.role!r} may not do this")
        request.state.principal = principal
        return principal

    return dependency
