"""The OAuth 2.0 face of the auth service: the token endpoint (RFC 6749: ``password`` and
``refresh_token`` grants), revocation (RFC 7009) and the authorization server metadata (RFC 8414).

Every client is public (``token_endpoint_auth_method: none``); a ``client_id`` it sends is recorded
in its tokens and binds its refresh tokens. A form without ``grant_type`` but with a username and
password is a password grant: the map page and the simulator's riders log in that way.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from ridehail.auth.deps import State, client_address, public_base_url
from ridehail.auth.grants import GrantRefused, end_session, password_grant, refresh_grant
from ridehail.auth.oauth_errors import NO_STORE, OAuthError, OAuthRoute, documented
from ridehail.auth.oauth_form import client_id, printable, read_form, refuse_client_authentication, refuse_scope, text
from ridehail.auth.schemas import ServerMetadata, TokenPair
from ridehail.auth.sessions import Pair
from ridehail.auth.tokens import ANONYMOUS_CLIENT
from ridehail.common.auth_tokens import ISSUER, MAX_TOKEN_CHARS, REVOKE_PATH, TOKEN_PATH, InvalidToken

GRANT_TYPES = ("password", "refresh_token")
METADATA_PATH = "/.well-known/oauth-authorization-server"

RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "string"}}}
NOT_CACHED = {
    "Cache-Control": {"description": "no-store", "schema": {"type": "string"}},
    "Pragma": {"description": "no-cache", "schema": {"type": "string"}},
}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: documented("invalid_request, invalid_grant, unsupported_grant_type or invalid_scope"),
    401: documented("invalid_client: the request tried to authenticate a client (all clients are public)"),
    413: documented("invalid_request: body too large"),
    429: documented("slow_down: too many failed logins; retry after the given seconds", RETRY_AFTER),
    503: documented("temporarily_unavailable: database away or too many password checks queued", RETRY_AFTER),
}


def _form_body(description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": required}
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/x-www-form-urlencoded": {"schema": schema}},
        }
    }


CLIENT_ID = {"type": "string", "maxLength": 128, "description": "Optional; recorded in the tokens."}
TOKEN_BODY = _form_body(
    "RFC 6749 section 4.3.2 (password) or 6 (refresh_token).",
    {
        "grant_type": {
            "type": "string",
            "enum": list(GRANT_TYPES),
            "description": "Required by RFC 6749; without it, a form with username and password is a password grant.",
        },
        "username": {"type": "string", "maxLength": 254, "description": "The email (grant_type=password)."},
        "password": {"type": "string", "maxLength": 1024, "description": "grant_type=password"},
        "refresh_token": {"type": "string", "maxLength": MAX_TOKEN_CHARS, "description": "grant_type=refresh_token"},
        "client_id": CLIENT_ID,
    },
    [],
)
REVOKE_BODY = _form_body(
    "RFC 7009 section 2.1.",
    {
        "token": {"type": "string", "maxLength": MAX_TOKEN_CHARS, "description": "A refresh token."},
        "token_type_hint": {
            "type": "string",
            "description": "refresh_token or access_token; only a hint (RFC 7009 section 2.1): the token is "
            "looked up as either type whatever it says.",
        },
        "client_id": CLIENT_ID,
    },
    ["token"],
)


def token_response(pair: Pair) -> JSONResponse:
    """An RFC 6749 section 5.1 token response: the pair as JSON, never cached."""
    body = TokenPair(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=pair.expires_in,
        refresh_expires_in=pair.refresh_expires_in,
    )
    return JSONResponse(body.model_dump(), headers=NO_STORE)


def build_oauth_router() -> APIRouter:
    router = APIRouter(tags=["oauth"], route_class=OAuthRoute)

    @router.post(
        TOKEN_PATH,
        summary="Token endpoint (RFC 6749): grant_type=password (log in) or refresh_token (rotate)",
        description="A used refresh token presented again revokes its whole session. Errors are RFC 6749 "
        "section 5.2 responses; token responses carry Cache-Control: no-store.",
        response_model=TokenPair,
        responses={200: {"headers": NOT_CACHED}, **ERRORS},
        openapi_extra=TOKEN_BODY,
    )
    async def token(request: Request, state: State) -> JSONResponse:
        refuse_client_authentication(request)
        form = await read_form(request)
        refuse_client_authentication(request, form)
        grant_type = form.get("grant_type")
        if grant_type is None and ("username" in form or "password" in form):
            grant_type = "password"  # the form callers sent before grant types were checked
        if grant_type is None:
            raise OAuthError("invalid_request", "the grant_type parameter is missing")
        if grant_type not in GRANT_TYPES:
            raise OAuthError("unsupported_grant_type", "supported grant types: password, refresh_token")
        refuse_scope(form)
        client = client_id(form) or ANONYMOUS_CLIENT
        try:
            if grant_type == "password":
                username, password = text(form, "username"), text(form, "password")
                pair = await password_grant(state, client_address(request, state), username, password, client)
            else:
                refresh = printable(form, "refresh_token", limit=MAX_TOKEN_CHARS)
                if refresh is None:
                    raise OAuthError("invalid_request", "the refresh_token parameter is missing")
                pair = await refresh_grant(state, refresh, client)
        except GrantRefused as exc:
            raise OAuthError("invalid_grant", exc.reason) from None
        return token_response(pair)

    @router.post(
        REVOKE_PATH,
        summary="Revocation endpoint (RFC 7009): end the session of a refresh token",
        description="Answers 200 for any token it does not know (RFC 7009 section 2.2). Access tokens "
        "cannot be revoked (they are verified offline): unsupported_token_type.",
        response_class=Response,
        responses={200: {"description": "Revoked, or not a token this server knows"}, **ERRORS},
        openapi_extra=REVOKE_BODY,
    )
    async def revoke(request: Request, state: State) -> Response:
        refuse_client_authentication(request)
        form = await read_form(request)
        refuse_client_authentication(request, form)
        token = form.get("token")
        if token is None:
            raise OAuthError("invalid_request", "the token parameter is missing")
        if len(token) > MAX_TOKEN_CHARS:
            raise OAuthError("invalid_request", f"the token parameter is longer than {MAX_TOKEN_CHARS} characters")
        client_id(form)  # well-formed if given; revoking needs no particular client
        try:
            await end_session(state, token)
        except (InvalidToken, GrantRefused):
            try:
                principal = state.issuer.verify(token, expected_type="access")
            except InvalidToken:
                principal = None
            if principal is not None:
                raise OAuthError(
                    "unsupported_token_type",
                    "access tokens cannot be revoked: they are verified offline and expire within "
                    f"{state.settings.access_token_ttl_s} s; revoke the refresh token",
                ) from None
        return Response(status_code=200, headers=NO_STORE)

    return router


def build_metadata_router() -> APIRouter:
    router = APIRouter(tags=["oauth"])

    @router.get(METADATA_PATH, summary="Authorization server metadata (RFC 8414)")
    async def metadata(request: Request, state: State, response: Response) -> ServerMetadata:
        base = public_base_url(request, state)
        response.headers["Cache-Control"] = "public, max-age=60"
        return ServerMetadata(
            issuer=ISSUER,
            token_endpoint=base + TOKEN_PATH,
            jwks_uri=base + "/.well-known/jwks.json",
            revocation_endpoint=base + REVOKE_PATH,
            grant_types_supported=list(GRANT_TYPES),
            response_types_supported=[],
            token_endpoint_auth_methods_supported=["none"],
            revocation_endpoint_auth_methods_supported=["none"],
            service_documentation=base + "/docs",
        )

    return router
