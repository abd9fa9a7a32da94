"""Reading the form of an OAuth request (token, revocation) the way RFC 6749 asks.

- the body is ``application/x-www-form-urlencoded`` in UTF-8 (section 4.3.2, appendix B): anything
  else, or bytes that do not decode, is ``invalid_request``;
- a parameter without a value counts as omitted, one given twice is ``invalid_request`` (section 3.1,
  3.2), unknown ones are ignored;
- values keep to the syntax of appendix A (no CR, LF or NUL in a username or password; printable
  ASCII in tokens and client ids);
- there are no confidential clients: a client that tries to authenticate (HTTP Basic, a
  ``client_secret`` or an assertion) gets 401 ``invalid_client`` (section 5.2).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from fastapi import Request

from ridehail.auth.oauth_errors import OAuthError

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FIELDS = 32
MAX_CLIENT_ID = 128
KNOWN = frozenset(
    {"grant_type", "username", "password", "refresh_token", "scope", "client_id", "token", "token_type_hint"}
)
CLIENT_CREDENTIALS = ("client_secret", "client_assertion", "client_assertion_type")

_VSCHAR = re.compile(r"[\x20-\x7e]+")
# UNICODECHARNOCRLF: %x09 / %x20-7E / %x80-D7FF / %xE000-FFFD / %x10000-10FFFF
_NOT_UNICODECHARNOCRLF = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def refuse_client_authentication(request: Request, form: dict[str, str] | None = None) -> None:
    """401 ``invalid_client`` if the request tries to authenticate a client (none is registered)."""
    scheme = request.headers.get("authorization", "").split(" ", 1)[0]
    if scheme.lower() == "basic":
        raise OAuthError(
            "invalid_client",
            "unknown client: every client is public here (token_endpoint_auth_method none)",
            401,
            {"WWW-Authenticate": 'Basic realm="ridehail"'},
        )
    if form is not None and any(name in form for name in CLIENT_CREDENTIALS):
        raise OAuthError("invalid_client", "unknown client: every client is public here, send no client secret", 401)


async def read_form(request: Request) -> dict[str, str]:
    """The request's parameters (name -> value); raises :class:`OAuthError` ``invalid_request``."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != FORM_TYPE:
        raise OAuthError("invalid_request", f"the request body must be {FORM_TYPE}")
    raw = await request.body()
    try:
        pairs = parse_qsl(
            raw.decode("utf-8"), keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=MAX_FIELDS
        )
    except UnicodeDecodeError:
        raise OAuthError("invalid_request", "the form is not valid UTF-8") from None
    except ValueError:
        raise OAuthError("invalid_request", f"more than {MAX_FIELDS} form fields") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if not value:
            continue
        if name in form:
            what = f"parameter {name}" if name in KNOWN else "a parameter"
            raise OAuthError("invalid_request", f"{what} is given more than once")
        form[name] = value
    return form


def required(form: dict[str, str], name: str) -> str:
    value = form.get(name)
    if value is None:
        raise OAuthError("invalid_request", f"the {name} parameter is missing")
    return value


def printable(form: dict[str, str], name: str, *, limit: int = 8192) -> str | None:
    """An optional parameter of printable ASCII (VSCHAR) of at most ``limit`` characters."""
    value = form.get(name)
    if value is not None and (len(value) > limit or not _VSCHAR.fullmatch(value)):
        raise OAuthError("invalid_request", f"the {name} parameter is malformed")
    return value


def text(form: dict[str, str], name: str) -> str:
    """A required username or password: any Unicode but CR, LF and other controls (tab allowed)."""
    value = required(form, name)
    if _NOT_UNICODECHARNOCRLF.search(value):
        raise OAuthError("invalid_request", f"the {name} parameter holds characters it may not")
    return value


def client_id(form: dict[str, str]) -> str | None:
    return printable(form, "client_id", limit=MAX_CLIENT_ID)


def refuse_scope(form: dict[str, str]) -> None:
    """No scopes are defined: a token speaks for its user's role. Asking for one is ``invalid_scope``."""
    if "scope" in form:
        raise OAuthError("invalid_scope", "this server defines no scopes; omit the scope parameter")
